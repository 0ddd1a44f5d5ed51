"""The vocabulary of the robot-task world: places, objects, actions and conditions.

Everything here is data read from `resources/*.yaml`; this module only loads it, checks
that the pieces refer to each other consistently, and exposes it as plain Python objects.
A richer world is an edit of the YAML, not of code. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from bitgen_core.errors import InputError

RESOURCES = Path(__file__).with_name("resources")

# Slot name in actions.yaml -> list name holding its fillers.
SLOT_FILLERS = {"manipulandum": "manipulanda", "tool": "tools", "person": "people", "subject": "subjects",
                "count_obj": "count_obj", "sample": "samples", "subsea_job": "subsea_jobs", "victim": "victims"}


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    places: tuple[str, ...]
    targets: tuple[str, ...]
    sites: tuple[str, ...]
    # Structures named so that the object alone tells the environment ("the church spire",
    # "the ship's propeller"): tasks about them often name no place at all.
    landmarks: tuple[str, ...] = ()
    # Sentences about the setting that name no place ("It sits about {n} metres up.").
    hints: tuple[str, ...] = ()
    # Family-specific verb phrases per action ("fly up and inspect" for rooftops).
    verbs: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Action:
    key: str
    need: str               # a need key of rules.yaml, or "carry" (resolved by payload weight)
    slot: str               # what fills the object slot
    families: tuple[str, ...]
    verbs: tuple[str, ...]
    also: tuple[str, ...] = ()   # secondary needs every instance of this action has


@dataclass(eq=False)
class World:
    families: dict[str, Family]
    actions: dict[str, Action]
    payloads: dict[str, tuple[str, ...]]       # weight class -> payload phrases
    fillers: dict[str, tuple[str, ...]]        # slot list name -> phrases
    phrasing: dict = field(default_factory=dict)

    @classmethod
    def load(cls, resources: str | Path | None = None) -> "World":
        root = Path(resources) if resources is not None else RESOURCES
        places = _yaml(root / "places.yaml")
        acts = _yaml(root / "actions.yaml")
        rules = _yaml(root / "rules.yaml")
        phrasing = _yaml(root / "phrasing.yaml")
        families = {}
        for key, spec in places.items():
            if key not in rules["families"]:
                raise InputError(f"places.yaml family {key!r} has no mobility entry in rules.yaml")
            fverbs = {a: tuple(v) for a, v in (spec.get("verbs") or {}).items()}
            families[key] = Family(key, rules["families"][key]["label"], tuple(spec["places"]),
                                   tuple(spec["targets"]), tuple(spec.get("sites") or ()),
                                   tuple(spec.get("landmarks") or ()), tuple(spec.get("hints") or ()),
                                   fverbs)
        actions = {}
        for key, spec in acts["actions"].items():
            fams = tuple(families) if spec["families"] == "all" else tuple(spec["families"])
            bad = [f for f in fams if f not in families]
            if bad:
                raise InputError(f"action {key!r} names unknown families {bad}")
            need = spec["need"]
            if need != "carry" and need not in rules["needs"]:
                raise InputError(f"action {key!r} names unknown need {need!r}")
            also = spec.get("also") or ()
            also = (also,) if isinstance(also, str) else tuple(also)
            if any(n not in rules["needs"] for n in also):
                raise InputError(f"action {key!r} names an unknown secondary need in {also}")
            actions[key] = Action(key, need, spec["slot"], fams, tuple(spec["verbs"]), also)
        for fam in families.values():
            for a in fam.verbs:
                if a not in actions or fam.key not in actions[a].families:
                    raise InputError(f"places.yaml family {fam.key!r} has verbs for action {a!r}, "
                                     "which is not an action of that family")
        payloads = {w: tuple(v) for w, v in acts["payloads"].items()}
        fillers = {name: tuple(acts[name]) for name in SLOT_FILLERS.values()}
        return cls(families, actions, payloads, fillers, phrasing)

    # --- sizes for the report -------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        places = sum(len(f.places) for f in self.families.values())
        objects = (sum(len(f.targets) + len(f.landmarks) for f in self.families.values())
                   + sum(len(v) for v in self.payloads.values()) + sum(len(v) for v in self.fillers.values()))
        verbs = (sum(len(a.verbs) for a in self.actions.values())
                 + sum(len(v) for f in self.families.values() for v in f.verbs.values()))
        tpl = self.phrasing["templates"]
        img = self.phrasing["image_templates"]
        forms = lambda d, split: sum(len(t["forms"]) for t in d.values() if t["split"] == split)
        return {"families": len(self.families), "places": places, "objects": objects,
                "action_families": len(self.actions), "verbs": verbs,
                "template_families": len(tpl) + len(img),
                "templates_train": forms(tpl, "train") + forms(img, "train"),
                "templates_heldout": forms(tpl, "heldout") + forms(img, "heldout"),
                "landmarks": sum(len(f.landmarks) for f in self.families.values()),
                "setting_hints": sum(len(f.hints) for f in self.families.values())}


def _yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"world resource not found: {path}") from None


@lru_cache(maxsize=4)
def default_world() -> World:
    return World.load()
