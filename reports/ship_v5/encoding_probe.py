"""Which text encoding tells "pumps in zone B" from "pumps in zone D"? (reports/ship_v5)

    python reports/ship_v5/encoding_probe.py CHECKPOINT

For each dev memory case: cosine of the fact's encoding to its task, its paraphrase and the
unrelated probe, for several encodings (mean / max-pooled backbone states, max-pooled token
embeddings, the model's own memory encoding), raw and with the mean over the dev tasks removed.
"""
import sys, json, torch, numpy as np
sys.path.insert(0, "training"); sys.path.insert(0, ".")
from evaluate import load_memory_cases
from bitgen_core.catalog import RobotCatalog
from bitgen_core.model import BitGenModel
torch.set_num_threads(1)
m = BitGenModel.load(sys.argv[1]).eval()
cases = load_memory_cases("data/dev/memory_cases.jsonl", RobotCatalog.load())
dev = [json.loads(l)["task"] for l in open("data/dev/tasks.jsonl")]
def states(texts):
    ids, mask = m._tokens(texts, m.config.max_task_tokens)
    with torch.no_grad():
        sink = torch.full_like(ids[:, :1], m.tokenizer.sink_id)
        h, _, _ = m.backbone(m.embed(torch.cat([sink, ids], 1)))
        e = m.embed(ids)
    return h[:, 1:], e, mask
def pools(texts):
    h, e, mask = states(texts)
    mk = mask.unsqueeze(-1).float()
    mean = (h * mk).sum(1) / mk.sum(1)
    mx = h.masked_fill(mk == 0, -1e9).max(1).values
    emax = e.masked_fill(mk == 0, -1e9).max(1).values
    with torch.no_grad():
        key = m.memory_encoding(*m._tokens(texts, m.config.max_task_tokens))
    return {"mean": mean, "max": mx, "embmax": emax, "memkey": key}
base = pools(dev)
mu = {k: v.mean(0) for k, v in base.items()}
cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))
res = {}
for c in cases:
    kind = "avail" if c["facts"][0]["key"].endswith("-status") else "site"
    P = pools([c["facts"][0]["text"], c["task"], c["paraphrases"][0], c["unrelated"][0]])
    for k, v in P.items():
        for centered in (False, True):
            x = v - mu[k] if centered else v
            name = f"{k}{'-centered' if centered else ''}"
            res.setdefault((kind, name), []).append((cos(x[0], x[1]), cos(x[0], x[2]), cos(x[0], x[3])))
for (kind, name), rows in sorted(res.items()):
    r = np.array(rows)
    print(f"{kind:5s} {name:18s} cos task {r[:,0].mean():+.2f} para {r[:,1].mean():+.2f} unrel {r[:,2].mean():+.2f} | task>unrel {np.mean(r[:,0] > r[:,2]):.2f} para>unrel {np.mean(r[:,1] > r[:,2]):.2f}")
