"""Availability facts on a model's own top-1 answers (reports/ship_v4c/README.md).

    python reports/ship_v4c/availability_probe.py MODEL_DIR [MODEL_DIR ...]

For each robot: the first 5 dev tasks (no image, no facts) the model answers with that robot
first; each of the 16 availability phrases of bitgen_core/data/resources/facts.yaml for that
robot is written to the memory in turn (the first 8 are the phrasings training uses as the
fact as written, the last 8 its paraphrases), and the probe counts how often the robot leaves
the top-1. Then three short drone facts outside that list, one of them the demo's. Runtime
only (no torch), one thread, deterministic.
"""
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bitgen_core.runtime import BitGenRuntime  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXTRA = ["the drone is grounded", "the drone is out of service", "the drone is unavailable"]


def main(dirs):
    facts = yaml.safe_load((ROOT / "bitgen_core/data/resources/facts.yaml").read_text())["availability"]
    dev = [json.loads(line) for line in (ROOT / "data/dev/tasks.jsonl").read_text().splitlines() if line.strip()]
    dev = [r for r in dev if not r.get("image") and not r.get("facts")]
    for d in dirs:
        rt = BitGenRuntime.load(d, threads=1)
        print(rt.model_id)
        top1 = {r["id"]: rt.select(r["task"], max_trace_tokens=0).robots[0] for r in dev}
        totals = {}
        for robot, phrases in facts.items():
            tasks = [r for r in dev if top1[r["id"]] == robot][:5]
            half = len(phrases) // 2
            for part, group in (("as written", phrases[:half]), ("paraphrase", phrases[half:])):
                removed = n = 0
                p_after = []
                for fact in group:
                    rt.memory.write("probe", fact)
                    for r in tasks:
                        s = rt.select(r["task"], max_trace_tokens=0)
                        removed += s.robots[0] != robot
                        n += 1
                        p_after.append(dict(zip(s.robots, s.confidences))[robot])
                    rt.memory.forget("probe")
                t = totals.setdefault(part, [0, 0])
                t[0] += removed
                t[1] += n
                print(f"  {robot:10s} {part:10s} tasks {len(tasks)}  top-1 removed {removed}/{n}  "
                      f"mean p after {sum(p_after) / max(1, len(p_after)):.2f}")
        for part, (removed, n) in totals.items():
            print(f"  all robots {part}: top-1 removed {removed}/{n} = {removed / n:.3f}")
        tasks = [r for r in dev if top1[r["id"]] == "drone"][:5]
        for fact in EXTRA:
            rt.memory.write("probe", fact)
            removed = sum(rt.select(r["task"], max_trace_tokens=0).robots[0] != "drone" for r in tasks)
            rt.memory.forget("probe")
            print(f"  not in facts.yaml {fact!r}: drone top-1 removed {removed}/{len(tasks)}")


if __name__ == "__main__":
    main(sys.argv[1:])
