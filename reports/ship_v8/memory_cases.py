"""Per-case memory outcomes of a model directory (runtime) or a checkpoint (.pt, torch):
the failing cases of efficacy (EFF), paraphrase (PARA) and locality (LOC).

    python reports/ship_v8/memory_cases.py models/default > reports/ship_v8/memory_cases_v8.txt
"""
import sys
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from training import evaluate as E
md = sys.argv[1]
if md.endswith('.pt'):
    p = E.CheckpointPredictor(md)
    cat = p.model.catalog
else:
    p = E.RuntimePredictor(md); cat = p.rt.catalog
cases = E.load_memory_cases('data/dev/memory_cases.jsonl', cat)
outs, m = E.evaluate_memory(p, cases)
print({k: round(v,3) for k,v in m.items() if isinstance(v,float)})
for o in outs:
    flags = []
    if o.after not in o.gold_after: flags.append(f"EFF after={o.after} gold={o.gold_after}")
    if any(x not in o.gold_after for x in o.paraphrases): flags.append(f"PARA {o.paraphrases}")
    if any(a != b for a, b in zip(o.unrelated_without, o.unrelated_with)): flags.append(f"LOC {o.unrelated_without}->{o.unrelated_with}")
    if flags: print(o.case_id, "before", o.before, "|", "; ".join(flags))
