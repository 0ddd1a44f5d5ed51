"""Stage 2 end to end on the smoke config: SFT + GRPO, checkpoints, resume continuity."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bitgen_core.data.generate import write_corpus
from bitgen_core.data.rules import parse_rationale
from bitgen_core.model import BitGenModel
from training import stage2
from training.common import REPO, TEACHER_FILE, text_key

torch.set_num_threads(1)
SMOKE = str(REPO / "training" / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    write_corpus(out, 80, seed=0, images=True, n_memory_cases=4, progress=False)
    # a teacher table as stage 1 leaves it (random vectors stand in for MiniLM here)
    tasks = [json.loads(line)["task"] for line in (out / "train.jsonl").read_text().splitlines()][:40]
    (out / "tcache").mkdir()
    emb = np.random.default_rng(0).standard_normal((len(tasks), 384)).astype(np.float16)
    np.savez(out / "tcache" / TEACHER_FILE, keys=np.array([text_key(t) for t in tasks]), emb=emb)
    return out


def overrides(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", SMOKE, f"out={out}", f"data.train=[{corpus}/train.jsonl]", f"data.val={corpus}/val.jsonl",
            f"data.heldout={corpus}/heldout.jsonl", f"data.feature_cache={corpus}/cache",
            f"data.text_cache={corpus}/tcache", *extra]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_compact_traces_fit_the_runtime_budget_and_keep_the_gold_selection(corpus):
    recs = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    model_tok = __import__("bitgen_core.tokenizer", fromlist=["BitGenTokenizer"]).BitGenTokenizer.load()
    from bitgen_core.catalog import RobotCatalog
    cat = RobotCatalog.load()
    for r in recs:
        t = stage2.compact_trace(r["rationale"], model_tok, 31, cat)
        assert t is not None and len(model_tok.encode(t)) <= 31
        assert parse_rationale(t, cat)["selected"] == r["robots"]


def test_smoke_run_trains_sft_then_grpo_and_writes_outputs(corpus, tmp_path):
    summary = stage2.main(overrides(corpus, tmp_path))
    log = rows(tmp_path / "metrics.jsonl")
    phases = [r["phase"] for r in log]
    assert phases.count("sft") == 2 and phases.count("grpo") == 2 and phases[-1] == "final"
    sft = [r for r in log if r["phase"] == "sft"]
    assert all(r["bce"] > 0 and r["lm"] > 0 and r["ponder"] >= 1 and r["distill"] > 0 for r in sft)
    assert all("relevance" in r and "coef_applies" in r and "coef_other" in r for r in sft)
    assert all(r["relevance"] > 0 for r in sft)     # smoke.yaml: relevance_batch 4
    assert all(0 <= r["well_formed"] <= 1 and "kl" in r for r in log if r["phase"] == "grpo")
    assert [r["elapsed_s"] for r in log] == sorted(r["elapsed_s"] for r in log)
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert (state["phase"], state["step"]) == ("grpo", 2)
    model = BitGenModel.load(tmp_path / "model.pt")
    assert model.config.name == "nano"
    assert model.select("inspect the pier pilings below the waterline")["robots"]
    assert 0 <= summary["val_top1"] <= 1 and summary["records"] > 70


def test_resume_continues_from_the_saved_step_with_the_same_losses(corpus, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    fast = ("sft.steps=4", "grpo.steps=0", "model.vision_options=null", "model.overrides={vision_kind: none}")
    stage2.main(overrides(corpus, full, *fast))
    stage2.main(overrides(corpus, part, *fast, "sft.max_minutes=1e-9"))
    state = torch.load(part / "state.pt", weights_only=False)
    assert state["step"] == 1                        # stopped by the safety timer after one step
    stage2.main(["--resume", *overrides(corpus, part, *fast)])
    a = [r for r in rows(full / "metrics.jsonl") if r["phase"] == "sft"]
    b = [r for r in rows(part / "metrics.jsonl") if r["phase"] == "sft"]
    assert [r["step"] for r in b][-2:] == [2, 4]
    # the steps after the resume see the same data, RNG and weights as the uninterrupted run
    assert b[-1]["loss"] == pytest.approx(a[-1]["loss"], rel=1e-4, abs=1e-5)
    assert b[-1]["bce"] == pytest.approx(a[-1]["bce"], rel=1e-4, abs=1e-5)


def test_frozen_embeddings_train_only_the_special_rows():
    from bitgen_core.config import BitGenConfig
    from training import common
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="none"), pretrained=False)
    before = model.embed.weight.detach().clone()
    common.trainable(model, freeze_embeddings=True, train_special_rows=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(common.param_groups(params, model, 0.1), lr=1e-2)
    ids, mask = model._tokens(["carry the crate up the stairs"], 16)
    tr, trm = model._tokens(["selected: legged"], 8)
    model(ids, mask, trace_ids=tr, trace_mask=trm)["lm_loss"].backward()
    special = sorted(model.tokenizer.special_ids)
    assert model.embed.weight.grad[special].abs().sum() > 0
    opt.step()
    changed = (model.embed.weight.detach() != before).any(1)
    assert changed[special].any() and set(changed.nonzero().flatten().tolist()) <= set(special)


def test_relevance_targets_and_loss_follow_the_applies_flags():
    """Each fact's read coefficient is trained towards its `applies` flag; facts without a
    flag (real data) and padding are not labelled; the loss is the squared error."""
    model = BitGenModel(__import__("bitgen_core.config", fromlist=["BitGenConfig"]).BitGenConfig.preset(
        "nano", vision_kind="none"), pretrained=False)
    recs = [
        {"task": "pump out zone B", "robots": ["underwater"], "image": None, "facts": [
            {"key": "x-status", "text": "the drone is grounded", "applies": True},
            {"key": "zone-C-flooded", "text": "zone C is flooded", "applies": False}]},
        {"task": "inspect the roof", "robots": ["drone"], "image": None, "facts": []},
        {"task": "carry boxes", "robots": ["wheeled"], "image": None, "facts": [
            {"key": "k", "text": "the aisle is blocked"}]},
    ]
    data = stage2.TaskBatches(recs, model, {}, 31)
    target, labelled = data.batch([0, 1, 2])["relevance"]
    assert target.tolist() == [[1, 0], [0, 0], [0, 0]]
    assert labelled.tolist() == [[True, True], [False, False], [False, False]]
    coef = torch.tensor([[0.5, 0.5], [9.0, 9.0], [9.0, 9.0]], requires_grad=True)
    loss, stats = stage2.relevance_loss(coef, (target, labelled))
    assert loss.item() == pytest.approx(0.25)
    assert stats == {"coef_applies": 0.5, "coef_other": 0.5}
    loss.backward()
    assert coef.grad[1:].abs().sum() == 0 and coef.grad[0].tolist() == pytest.approx([-0.5, 0.5])
    assert stage2.relevance_loss(None, (target, labelled))[0].item() == 0
    assert data.batch([1])["relevance"] is None
    # relevance_availability=False: availability facts ("-status" keys) are not labelled
    site_only = stage2.TaskBatches(recs, model, {}, 31, relevance_availability=False)
    assert site_only.batch([0])["relevance"][1].tolist() == [[False, True]]
    # with a read gate the loss is the BCE of g(a) = sigmoid(k (a - t)) against the flags
    a = torch.tensor([[0.9, 0.2], [9.0, 9.0], [9.0, 9.0]])
    loss, _ = stage2.relevance_loss(a, (target, labelled), gate=12.0, threshold=0.5)
    expect = torch.nn.functional.binary_cross_entropy_with_logits(
        12.0 * (torch.tensor([0.9, 0.2]) - 0.5), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)


def test_generated_memory_records_train_the_read_selectively(corpus):
    """The generated corpus labels its facts, both ways, so the loss has positives and negatives."""
    recs = [r for r in rows(corpus / "train.jsonl") if r["facts"]]
    flags = [f["applies"] for r in recs for f in r["facts"]]
    assert recs and True in flags and False in flags


def test_fp32_twin_stays_full_precision_through_checkpoints_and_init(corpus, tmp_path):
    """`model.overrides.quantize=false` (issue 4's fp32 twin): the saved config says so, every
    BitLinear runs F.linear on the latent weights after a save/load, and a stage continued
    from that checkpoint (`init=`, as stage 2 continues stage 1) is still the fp32 twin."""
    from bitgen_core.quant import bitlinear_layers
    fast = ("sft.steps=2", "grpo.steps=0", "model.vision_options=null")
    first, second = tmp_path / "a", tmp_path / "b"
    stage2.main(overrides(corpus, first, *fast, "model.overrides={vision_kind: none, quantize: false}"))
    stage2.main(overrides(corpus, second, *fast, f"init={first}/model.pt"))
    for out in (first, second):
        ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
        assert ckpt["config"]["quantize"] is False
        model = BitGenModel.load(out / "model.pt").eval()
        layers = bitlinear_layers(model)
        assert layers and all(not m.quantize for _, m in layers)
        _, layer = layers[0]
        x = torch.randn(3, layer.in_features)
        with torch.no_grad():
            fp = layer(x)
            assert torch.allclose(fp, torch.nn.functional.linear(layer.norm(x), layer.weight, layer.bias))
            layer.quantize = True
            assert not torch.allclose(fp, layer(x), atol=1e-3)
            layer.quantize = False


def test_relevance_batch_reads_the_same_coefficients_as_the_full_forward(corpus):
    """read_coefficients (the relevance batch's cheap path) == forward()'s memory_coef."""
    from bitgen_core.catalog import RobotCatalog
    from bitgen_core.config import BitGenConfig
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="none"), pretrained=False).eval()
    recs = [r for r in stage2.load_split(corpus / "train.jsonl", RobotCatalog.load()) if r["facts"]][:6]
    data = stage2.TaskBatches(recs, model, {}, 31)
    b = data.batch(list(range(len(recs))), use_images=False)
    with torch.no_grad():
        torch.testing.assert_close(stage2.read_coefficients(model, b), stage2.forward(model, b)["memory_coef"])
        assert stage2.read_coefficients(model, {**b, "memory": None}) is None


def test_scope_loss_is_the_bce_of_exp_minus_s_against_the_applies_flags():
    s = torch.tensor([0.1, 2.0, 0.1, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss, stats = stage2.scope_loss(s, y)
    r = np.exp(-np.array([0.1, 2.0, 0.1, 2.0]))
    expect = np.mean([0.1, 2.0, -np.log(1 - r[2]), -np.log(1 - r[3])])
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert stats == pytest.approx({"scope_applies": r[:2].mean(), "scope_other": r[2:].mean()}, rel=1e-5)
    loss.backward()    # applies: push S down; does not apply: push S up
    assert s.grad[0] > 0 and s.grad[1] > 0 and s.grad[2] < 0 and s.grad[3] < 0


def test_scope_pairs_learn_from_generated_episodes_that_the_place_words_decide(tmp_path):
    """A few hundred steps of the scope loss on a generated corpus (token ops only): held-out
    generated facts are in scope exactly when they apply, a zone-B fact is out of scope for
    the same job in zone D, and an availability fact stays in scope everywhere."""
    from bitgen_core.config import BitGenConfig
    write_corpus(tmp_path, 3000, seed=3, n_memory_cases=0, progress=False)
    recs = rows(tmp_path / "train.jsonl")
    __import__("random").Random(0).shuffle(recs)     # episodes are written together: mix them
    torch.manual_seed(0)
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="none", memory_scope=True), pretrained=True)
    train, held = stage2.ScopePairs(recs[:2400], model), stage2.ScopePairs(recs[2400:], model)
    assert len(train) > 300 and len(held) > 50
    opt = torch.optim.Adam(model.memory_scope.parameters(), lr=0.05)
    rng = __import__("random").Random(0)
    for _ in range(300):
        loss, _ = train.loss(rng, 128)
        opt.zero_grad()
        loss.backward()
        opt.step()
    table = model.memory_scope.table(model.embed.weight)
    tok, n = model.tokenizer, model.config.max_task_tokens
    r = lambda f, t: __import__("bitgen_core.memory_np", fromlist=["x"]).scope_relevance(  # noqa: E731
        table, tok.encode(f, n), tok.encode(t, n))
    acc = np.mean([(r(f, t) > 0.5) == bool(y) for f, t, y in held.pairs])
    assert acc >= 0.9, f"held-out scope accuracy {acc:.3f}"
    # the minimal pairs: a site fact with its task ("-a") and with the same job in another
    # zone of the same site ("-m"), and availability facts with unrelated tasks ("-u")
    kinds = {"a": [], "m": [], "u": []}
    for rec in recs[2400:]:
        tag = rec["id"].rsplit("-", 1)[-1]
        fact = rec["facts"][0] if rec.get("facts") else None
        if tag in kinds and fact and (tag != "u" or fact["key"].endswith("-status")):
            kinds[tag].append(r(fact["text"], rec["task"]) > 0.5)
    assert min(len(v) for v in kinds.values()) >= 5, {k: len(v) for k, v in kinds.items()}
    assert np.mean(kinds["a"]) >= 0.85 and np.mean(kinds["u"]) >= 0.9
    assert np.mean(kinds["m"]) <= 0.2, f"{np.mean(kinds['m']):.2f} of the other-zone jobs in scope"


def test_stage2_turns_the_scope_on_over_an_init_checkpoint_and_trains_it(corpus, tmp_path):
    """`init_overrides: {memory_scope: true}` on a checkpoint without it: the run logs the
    scope loss, saves a scoped model, and the specificity moved from its init."""
    fast = ("sft.steps=3", "grpo.steps=0", "model.vision_options=null", "sft.log_every=1")
    first, second = tmp_path / "a", tmp_path / "b"
    stage2.main(overrides(corpus, first, *fast, "model.overrides={vision_kind: none}"))
    stage2.main(overrides(corpus, second, *fast, f"init={first}/model.pt", "init_overrides={memory_scope: true}",
                          "sft.scope_weight=1.0", "sft.scope_batch=32", "sft.scope_lr=0.05"))
    model = BitGenModel.load(second / "model.pt")
    assert model.config.memory_scope and model.memory_scope is not None
    assert model.memory_scope.offset.abs().max() > 0
    logged = [r for r in rows(second / "metrics.jsonl") if r.get("phase") == "sft"]
    assert logged and all(r["scope"] > 0 for r in logged)


def test_stage2_distils_only_towards_the_texts_its_stage1_distilled(corpus, tmp_path, capsys):
    """The teacher cache holds every text any run distilled; stage 2 takes only the keys its
    init's stage 1 wrote (teacher_keys.txt), so another run's texts in the cache change
    nothing. Without the file it takes the whole cache and says so."""
    from training.common import TEACHER_KEYS_FILE, read_teacher_keys, write_teacher_keys
    fast = ("sft.steps=1", "grpo.steps=0", "model.vision_options=null", "model.overrides={vision_kind: none}")
    init = tmp_path / "init"
    stage2.main(overrides(corpus, init, *fast))
    assert "every cached teacher text" in capsys.readouterr().err
    recs = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    cached = {json.loads(line)["task"] for line in (corpus / "train.jsonl").read_text().splitlines()[:40]}
    mine = sorted(cached)[:5]
    write_teacher_keys(init, mine + ["a text stage 1 distilled that is not a task"])
    assert read_teacher_keys(init / "model.pt") == {text_key(t) for t in mine} | {
        text_key("a text stage 1 distilled that is not a task")}
    assert (init / TEACHER_KEYS_FILE).read_text().count("\n") == 6
    stage2.main(overrides(corpus, tmp_path / "b", *fast, f"init={init}/model.pt"))
    err = capsys.readouterr().err
    want = sum(r["task"] in mine for r in recs)
    assert want > 0 and f"stage2: {want} records with a MiniLM teacher embedding" in err
    assert "every cached teacher text" not in err


def test_ema_is_a_shadow_average_that_ships_and_resumes(corpus, tmp_path):
    fast = ("sft.steps=4", "grpo.steps=0", "model.vision_options=null", "model.overrides={vision_kind: none}")
    plain, ema, part = tmp_path / "plain", tmp_path / "ema", tmp_path / "part"
    stage2.main(overrides(corpus, plain, *fast))
    stage2.main(overrides(corpus, ema, *fast, "sft.ema_decay=0.5"))
    sd = lambda p: BitGenModel.load(p).state_dict()
    last, shipped, no_ema = sd(ema / "sft_last.pt"), sd(ema / "model.pt"), sd(plain / "model.pt")
    # the average never feeds back: the last iterate is the run without it, bit for bit
    assert all(torch.equal(last[k], no_ema[k]) for k in no_ema)
    # what ships is the average: trained weights differ from the last iterate, frozen ones do not
    moved = [k for k in last if last[k].is_floating_point() and not torch.equal(last[k], shipped[k])]
    assert "selector.task_proj.weight" in moved and "memory_key.weight" in moved
    frozen = sorted(set(range(last["embed.weight"].shape[0]))
                    - set(BitGenModel.load(ema / "model.pt").tokenizer.special_ids))
    assert torch.equal(last["embed.weight"][frozen], shipped["embed.weight"][frozen])
    a = [r for r in rows(plain / "metrics.jsonl") if r["phase"] == "sft"]
    b = [r for r in rows(ema / "metrics.jsonl") if r["phase"] == "sft"]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    # resume: the averaged weights after an interruption equal those of the uninterrupted run
    stage2.main(overrides(corpus, part, *fast, "sft.ema_decay=0.5", "sft.max_minutes=1e-9"))
    stage2.main(["--resume", *overrides(corpus, part, *fast, "sft.ema_decay=0.5")])
    resumed = sd(part / "model.pt")
    assert all(torch.allclose(resumed[k], shipped[k], atol=1e-6) for k in shipped)
    with pytest.raises(SystemExit, match="ema_decay"):
        stage2.main(overrides(corpus, tmp_path / "bad", *fast, "sft.ema_decay=1.0"))


def test_token_dropout_deletes_words_of_fact_free_rows_and_keeps_them_packed():
    ids = torch.tensor([[5, 6, 7, 8, 9, 1, 1], [5, 6, 7, 8, 9, 10, 11], [5, 6, 1, 1, 1, 1, 1]])
    mask = (ids != 1).long()
    rng = np.random.default_rng(0)
    out, m = stage2.drop_tokens(ids, mask, 0.5, rng, [True, False, True], pad_id=1)
    assert torch.equal(out[1], ids[1]) and torch.equal(m[1], mask[1])     # a row with facts: whole
    for i in (0, 2):
        n = int(m[i].sum())
        assert 1 <= n <= int(mask[i].sum())
        assert torch.equal(m[i], (torch.arange(7) < n).long())              # packed, right-padded
        kept = out[i, :n].tolist()
        assert kept == [t for t in ids[i].tolist() if t in kept]            # order kept, a subsequence
        assert (out[i, n:] == 1).all()
    many = [stage2.drop_tokens(ids, mask, 0.5, rng, [True] * 3, pad_id=1)[1][1].sum() for _ in range(200)]
    assert 2.5 < float(torch.stack(many).float().mean()) < 4.5             # about half of 7 survive
    ones = stage2.drop_tokens(ids, mask, 0.99, rng, [True] * 3, pad_id=1)[1]
    assert (ones.sum(1) >= 1).all()                                         # never an empty task


def test_token_dropout_changes_training_only_where_asked(corpus, tmp_path):
    fast = ("sft.steps=2", "grpo.steps=0", "model.vision_options=null", "model.overrides={vision_kind: none}")
    stage2.main(overrides(corpus, tmp_path / "a", *fast))
    stage2.main(overrides(corpus, tmp_path / "b", *fast, "sft.token_dropout=0.3"))
    la = [r["bce"] for r in rows(tmp_path / "a" / "metrics.jsonl") if r["phase"] == "sft"]
    lb = [r["bce"] for r in rows(tmp_path / "b" / "metrics.jsonl") if r["phase"] == "sft"]
    assert la != lb
    with pytest.raises(SystemExit, match="token_dropout"):
        stage2.main(overrides(corpus, tmp_path / "c", *fast, "sft.token_dropout=1"))


def test_rank_loss_orders_capable_fallbacks_above_robots_that_cannot_do_the_job():
    # robots: 0 gold, 1 capable but not selected, 2 and 3 incapable
    targets = torch.tensor([[1.0, 0, 0, 0]])
    capable = torch.tensor([[1.0, 1, 0, 0]])
    good = torch.tensor([[5.0, -2, -6, -7]], requires_grad=True)
    bad = torch.tensor([[5.0, -6, -2, -7]], requires_grad=True)
    lg, lb = stage2.rank_loss(good, targets, capable), stage2.rank_loss(bad, targets, capable)
    assert lg < lb
    # exactly the two pairs (1 over 2, 1 over 3), and the gold robot takes no part
    assert lb.item() == pytest.approx(float(torch.nn.functional.softplus(torch.tensor([4.0, -1.0])).mean()))
    lb.backward()
    assert bad.grad[0, 0] == 0 and bad.grad[0, 1] < 0 and bad.grad[0, 2] > 0
    # nothing to order (every robot capable, or none beyond the gold): zero, and still differentiable
    assert stage2.rank_loss(good, targets, torch.ones(1, 4)).item() == 0
    assert stage2.rank_loss(good, targets, targets).requires_grad


def test_capable_robots_come_from_the_rationale_after_the_gold_set(corpus):
    recs = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    with_alt = 0
    for r in recs:
        cap = stage2.capable_robots(r)
        assert cap[:len(r["robots"])] == r["robots"]
        assert set(cap) >= set(parse_rationale(r["rationale"])["capable"])
        with_alt += len(cap) > len(r["robots"])
    assert with_alt > len(recs) // 4
    assert stage2.capable_robots({"robots": ["drone"], "rationale": None}) == ["drone"]
    # a fleet with a sixth robot: its rationale is read in that fleet's catalog
    from bitgen_core.catalog import Robot, RobotCatalog
    fleet = RobotCatalog.load().with_robot(Robot(key="boat", name="Surface Vessel", description="An autonomous boat."))
    rec = {"robots": ["drone"], "rationale": "environment: on the lake → open water surface; "
                                             "needs: patrol → Drone, Surface Vessel; selected: Drone"}
    assert stage2.capable_robots(rec, fleet) == ["drone", "boat"]


def test_rank_weight_adds_the_rank_loss_to_training(corpus, tmp_path):
    fast = ("sft.steps=2", "grpo.steps=0", "model.vision_options=null", "model.overrides={vision_kind: none}")
    stage2.main(overrides(corpus, tmp_path / "off", *fast))
    stage2.main(overrides(corpus, tmp_path / "on", *fast, "sft.rank_weight=0.5"))
    off = [r for r in rows(tmp_path / "off" / "metrics.jsonl") if r["phase"] == "sft"][-1]
    on = [r for r in rows(tmp_path / "on" / "metrics.jsonl") if r["phase"] == "sft"][-1]
    assert off["rank"] == 0 and on["rank"] > 0
    assert on["loss"] > off["loss"] and on["bce"] == pytest.approx(off["bce"], rel=0.2)


def test_stage2_adds_the_selectors_fact_term_over_an_init_checkpoint_and_trains_it(corpus, tmp_path):
    """`init_overrides: {memory_robot: true}` on a checkpoint without it: the term starts closed
    (gate 0) and training opens it; the saved model has it."""
    fast = ("sft.steps=3", "grpo.steps=0", "model.vision_options=null")
    first, second = tmp_path / "a", tmp_path / "b"
    stage2.main(overrides(corpus, first, *fast, "model.overrides={vision_kind: none}"))
    stage2.main(overrides(corpus, second, *fast, f"init={first}/model.pt",
                          "init_overrides={memory_scope: true, memory_robot: true}"))
    model = BitGenModel.load(second / "model.pt")
    assert model.config.memory_robot and model.selector.fact_proj is not None
    assert model.selector.fact_gate.item() != 0
