"""The design check behind the memory scope (reports/ship_v6/README.md), before any training:
can a per-token specificity alpha = softplus(E_t . u + b + beta_t) fitted to the generator's
`applies` labels alone make r = exp(-sum over the fact's tokens missing from the task of alpha)
selective on the hand-written dev memory cases? E is a checkpoint's (frozen) embedding.

    python reports/ship_v6/scope_probe.py CHECKPOINT [LR STEPS]
    python reports/ship_v6/scope_probe.py runs/lexrepro/stage2/model.pt 0.05 800

Prints per dev case r for the task, its paraphrase and the unrelated task, with the fact's
four most specific tokens, then the share of cases on the right side of 0.5."""
import json, sys, random
from pathlib import Path
import numpy as np, torch
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bitgen_core.model import BitGenModel
m = BitGenModel.load(sys.argv[1]); tok = m.tokenizer
E = m.embed.weight.detach()
L = 64
def ids(t): return tok.encode(t, L)
rows = []
for l in open(ROOT / 'runs/data/corpus/train.jsonl'):
    r = json.loads(l)
    for f in r.get('facts') or []:
        if isinstance(f.get('applies'), bool):
            rows.append((ids(f['text']), set(ids(r['task'])), float(f['applies']), f['key'].endswith('-status')))
print(len(rows), 'labelled facts; applies share', np.mean([r[2] for r in rows]))
torch.manual_seed(0)
u = torch.zeros(E.shape[1], requires_grad=True); b = torch.tensor(-3.0, requires_grad=True); beta = torch.zeros(E.shape[0], requires_grad=True)
opt = torch.optim.Adam([u, b, beta], lr=float(sys.argv[2]) if len(sys.argv) > 2 else 0.05)
def S_of(batch):
    out = []
    for fi, q, y, _ in batch:
        fi_t = torch.tensor(fi); miss = torch.tensor([t not in q for t in fi], dtype=torch.float32)
        a = torch.nn.functional.softplus(E[fi_t] @ u + b + beta[fi_t])
        out.append((a * miss).sum())
    return torch.stack(out)
rng = random.Random(0)
for step in range(int(sys.argv[3]) if len(sys.argv) > 3 else 600):
    batch = rng.sample(rows, 256)
    S = S_of(batch).clamp(min=1e-6); y = torch.tensor([r[2] for r in batch])
    loss = (y * S - (1 - y) * torch.log(-torch.expm1(-S))).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 0: print(step, float(loss))
# train-set accuracy
with torch.no_grad():
    S = S_of(rows[:3000]); r = torch.exp(-S); y = torch.tensor([x[2] for x in rows[:3000]])
    print('train acc', float(((r > 0.5).float() == y).float().mean()))
    alpha = torch.nn.functional.softplus(E @ u + b + beta)
def rel(fact, q):
    fi = ids(fact); qs = set(ids(q))
    return float(torch.exp(-sum(alpha[t] * (t not in qs) for t in fi)))
ok = {'task': [], 'para': [], 'unrel': []}
for l in open(ROOT / 'data/dev/memory_cases.jsonl'):
    c = json.loads(l); f = c['fact']['text']
    rt, rp, ru = rel(f, c['task']), rel(f, c['task_paraphrase']), rel(f, c['unrelated_task'])
    avail = c['kind'] == 'availability'
    ok['task'].append(rt > .5); ok['para'].append(rp > .5); ok['unrel'].append((ru > .5) if avail else (ru < .5))
    top = sorted(((float(alpha[t]), tok.decode([t]) if hasattr(tok,'decode') else t) for t in ids(f)), reverse=True)[:4]
    print(c['id'], c['kind'][:5], f'{rt:.2f} {rp:.2f} {ru:.2f}', f[:50], top)
print({k: sum(v) / len(v) for k, v in ok.items()})
