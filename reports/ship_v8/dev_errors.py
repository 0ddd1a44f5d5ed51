"""The dev tasks a model directory gets wrong (top-1 not in gold), through the runtime.

    python reports/ship_v8/dev_errors.py models/default > reports/ship_v8/dev_errors_v8.txt
"""
import sys, json
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from training import evaluate as E
from bitgen_core.catalog import RobotCatalog
md = sys.argv[1]
p = E.RuntimePredictor(md)
cat = p.rt.catalog
recs = E.load_records('data/dev/tasks.jsonl', cat)
preds, m = E.evaluate_set(p, recs, cat)
print(m['top1'])
for r, pr in zip(recs, preds):
    if pr.robots[0] not in r['robots']:
        print(f"{r.get('id','?')}\t{'IMG' if r['image'] else '   '}\tgold={r['robots']}\tpred={pr.robots[:3]} {[round(x,2) for x in pr.probs[:3]]}\t{r['task']}")
