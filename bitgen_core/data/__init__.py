"""The robot-task world: vocabulary, capability rules, phrasing, scenes, memory episodes,
loaders for real data, and the corpus generator. Torch-free."""
from bitgen_core.data.loaders import LoadReport, load_coco_captions, load_task_records
from bitgen_core.data.rules import Decision, RuleBook, parse_rationale

__all__ = ["Decision", "LoadReport", "RuleBook", "load_coco_captions", "load_task_records", "parse_rationale"]
