"""Read share of a site fact on generated memory-episode records, by record kind (reports/ship_v5).

    python reports/ship_v5/minimal_pair_probe.py CHECKPOINT [RECORDS.jsonl ...]

Generated site episodes (bitgen_core/data/episodes.py `episode_records`) hold the task with its
fact ("a": applies), the unrelated task with the fact ("u": another place, does not apply) and
the minimal pair ("m": the same job in another zone of the same site, does not apply). For each
record with one site fact, the fact is written alone into a fresh deployment memory and read
with the record's task: the fact's coefficient a (or the gate's g(a)). Answers whether training
separates the minimal pairs at all, the pattern of the hand-written locality probes.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bitgen_core.data.episodes import is_availability_key  # noqa: E402
from bitgen_core.memory_np import gate  # noqa: E402
from bitgen_core.model import BitGenModel  # noqa: E402

torch.set_num_threads(1)
m = BitGenModel.load(sys.argv[1]).eval()
paths = sys.argv[2:] or ["runs/data/corpus/val.jsonl"]
k, t = m.memory.gate, m.memory.gate_threshold
shares: dict[str, list[float]] = {}
for path in paths:
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        facts = r.get("facts") or []
        tag = r["id"].rsplit("-", 1)[-1]
        if len(facts) != 1 or is_availability_key(facts[0]["key"]) or tag not in ("a", "u", "m"):
            continue
        mem = m.new_memory()
        mem.write(m.fact_encoding(facts[0]["text"]), "f")
        ids, mask = m._tokens([r["task"]], m.config.max_task_tokens)
        with torch.no_grad():
            z = m.memory_encoding(ids, mask)[0].double()
        a = mem.read_with_facts(z)[1][0].weight
        shares.setdefault(tag, []).append(float(gate(np.array(a), k, t)) if k > 0 else a)
names = {"a": "task (applies)", "u": "unrelated (does not apply)", "m": "minimal pair (does not apply)"}
print(f"{sys.argv[1]}: gate k={k} t={t}")
for tag in ("a", "u", "m"):
    v = np.array(shares.get(tag, []))
    if len(v):
        print(f"  {names[tag]:32s} n={len(v):4d}  share {v.mean():.3f}  share>0.5 {np.mean(v > 0.5):.2f}")
