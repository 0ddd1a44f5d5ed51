"""BitGenModel: shapes per preset, learning, memory prefix, streamed traces with a constant
cache, decode-step == teacher forcing, a sixth robot, save/load."""
import numpy as np
import pytest
import torch

from bitgen_core.catalog import Robot, RobotCatalog
from bitgen_core.config import BitGenConfig
from bitgen_core.errors import InputError, ModelLoadError
from bitgen_core.memory_np import scope_relevance
from bitgen_core.model import BitGenModel, FactEpisodes, print_param_counts
from bitgen_core.tokenizer import BitGenTokenizer

torch.set_num_threads(1)

TASKS = [("fly over the stadium roof and film the crowd", ["drone"]),
         ("inspect the hull of the ship below the waterline", ["underwater"]),
         ("open the door and hand the wrench to the mechanic", ["humanoid"]),
         ("move the pallets across the warehouse floor", ["wheeled"]),
         ("climb over the rubble after the landslide", ["legged"]),
         ("search the collapsed house and carry water up the stairs", ["legged", "humanoid"])]


@pytest.fixture(scope="module")
def tok():
    return BitGenTokenizer.load()


def nano(tok, pretrained=False, **kw):
    torch.manual_seed(0)
    return BitGenModel(BitGenConfig.preset("nano", **{"vision_kind": "none", **kw}), tokenizer=tok,
                       pretrained=pretrained)


def batch(model, tasks):
    ids, mask = model._tokens([t for t, _ in tasks], model.config.max_task_tokens)
    y = torch.tensor([model.catalog.multi_hot(r) for _, r in tasks])
    return ids, mask, y


@pytest.fixture(scope="module")
def trained(tok):
    """A nano model overfitted on six (task -> robots) examples: shared by several tests."""
    model = nano(tok, pretrained=True)
    model.embed.weight.requires_grad_(False)   # keep MiniLM's lexicon; also 3x faster steps here
    ids, mask, y = batch(model, TASKS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(60):
        loss = model.loss(model(ids, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.mark.parametrize("preset", ["nano", "tiny", "small"])
def test_forward_shapes_for_each_preset(tok, preset):
    torch.manual_seed(0)
    cfg = BitGenConfig.preset(preset)
    model = BitGenModel(cfg, tokenizer=tok, pretrained=False)
    ids, mask, _ = batch(model, TASKS[:3])
    trace, tmask = model._tokens(["selected: drone", "environment: water → underwater", "x"], 16)
    images = torch.randn(3, 3, 224, 224)
    out = model(ids, mask, images=images, trace_ids=trace, trace_mask=tmask)
    assert out["robot_logits"].shape == (3, 5)
    assert out["state"].shape == out["sep_state"].shape == (3, cfg.d_model)
    assert out["steps"].shape == (3,) and 1 <= out["steps"].min() and out["steps"].max() <= 8
    assert out["trace_logprobs"].shape == (3, trace.shape[1] + 1)
    assert torch.isfinite(out["lm_loss"]) and out["lm_loss"] > 0
    # the image tokens feed cross-attention in the upper half only
    assert [b.xattn is not None for b in model.blocks] == [i >= cfg.n_layers // 2 for i in range(cfg.n_layers)]
    counts = model.param_count()
    assert counts["lm_head"] == 0 and counts["total"] == sum(p.numel() for p in model.parameters())
    assert sum(counts[k] for k in ("vision", "embeddings", "memory", "backbone", "reasoning",
                                   "selector", "lm_head")) == counts["total"]
    assert counts["embeddings"] == cfg.vocab_size * cfg.d_model


def test_a_tiny_model_overfits_a_handful_of_tasks(trained):
    model, losses = trained
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    ids, mask, y = batch(model, TASKS)
    with torch.no_grad():
        probs = torch.sigmoid(model(ids, mask)["robot_logits"])
    top1 = probs.argmax(1)
    assert all(y[i, top1[i]] == 1 for i in range(len(TASKS))), probs
    assert model.select(TASKS[1][0])["robots"][0] == "underwater"


def test_a_sixth_catalog_entry_works_without_code_change(trained):
    model, _ = trained
    ids, mask, y = batch(model, TASKS)
    with torch.no_grad():
        before = torch.sigmoid(model(ids, mask)["robot_logits"])
        boat = Robot(key="boat", name="Surface Vessel",
                     description="An autonomous boat for the water surface: patrols lakes, rivers and "
                                 "harbours, cannot dive or leave the water.")
        model.set_catalog(RobotCatalog.load().with_robot(boat))
        try:
            after = torch.sigmoid(model(ids, mask)["robot_logits"])
            sel = model.select("patrol the harbour")
        finally:
            model.set_catalog(RobotCatalog.load())
    assert after.shape == (len(TASKS), 6) and torch.isfinite(after).all()
    torch.testing.assert_close(after[:, :5], before)          # the five are untouched
    assert all(y[i, after[i].argmax()] == 1 for i in range(len(TASKS)))
    assert "boat" in sel["robots"] and len(sel["confidences"]) == 6


@pytest.mark.parametrize("lexical", [False, True])
def test_memory_fact_changes_the_output_and_forget_restores_it_exactly(tok, lexical):
    model = nano(tok, memory_lexical=lexical).eval()
    with torch.no_grad():
        model.memory.prior_mean.normal_()      # a trained-looking prior, not zeros
    mem = model.new_memory()
    task = "deliver the parcel to the roof"
    base = model.select(task, memory=mem)["probabilities"]
    mem.write(model.fact_encoding("the drone is grounded for high winds"), "wind")
    with_fact = model.select(task, memory=mem)["probabilities"]
    assert max(abs(with_fact[k] - base[k]) for k in base) > 1e-4
    mem.write(model.fact_encoding("zone b is flooded"), "flood")
    mem.forget("flood")
    one_left = model.select(task, memory=mem)["probabilities"]
    assert max(abs(one_left[k] - with_fact[k]) for k in base) < 1e-5
    mem.forget("wind")
    assert model.select(task, memory=mem)["probabilities"] == base   # bit-identical
    # an empty deployment memory (float64) reads what training reads with no facts (float32)
    no_memory = model.select(task)["probabilities"]
    assert max(abs(no_memory[k] - base[k]) for k in base) < 1e-5


@pytest.mark.parametrize("lexical", [False, True])
def test_training_episodes_read_like_the_deployment_memory(tok, lexical):
    model = nano(tok, memory_lexical=lexical).eval()
    fact = "the drone is grounded for high winds"
    ids, mask, _ = batch(model, TASKS[:2])
    f_ids, f_mask = model._tokens([fact, ""], 16)
    episodes = FactEpisodes(ids=torch.stack([f_ids, f_ids]), mask=torch.stack([f_mask, f_mask]))
    mem = model.new_memory()
    mem.write(model.fact_encoding(fact), "wind")
    with torch.no_grad():
        a = model(ids, mask, memory=episodes)["z_read"]
        b = model(ids, mask, memory=mem)["z_read"]
        empty = model(ids, mask)["z_read"]
    # float32 one-shot episode write == float64 sequential deployment write (up to rounding;
    # logits are compared elsewhere: int8 activation rounding amplifies 1e-5 differences)
    torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
    assert (a - empty).abs().max() > 1e-2
    model.train()
    out = model(ids, mask, memory=episodes)
    assert out["memory_kl"] > 0 and out["memory_kl"].requires_grad


def test_generate_trace_streams_with_a_constant_cache(tok):
    model = nano(tok, max_task_tokens=8, max_trace_tokens=8, window=16).eval()
    pieces = []
    out = model.generate_trace("inspect the pipe", max_new_tokens=200, on_token=pieces.append,
                               stop_at_eos=False)
    sizes = out["cache_sizes"]
    assert out["ids"].shape == (1, 200) and len(sizes) == 200
    assert max(sizes) == model.config.n_sink + model.config.window
    assert sizes[-150:] == [max(sizes)] * 150                       # constant once full
    text = tok.decode(out["ids"][0][out["mask"][0]].tolist())
    assert "".join(pieces).startswith(text) and out["texts"][0] == text
    # sampling a GRPO group: G rows, log-probs of the sampled tokens, reproducible by seed
    g1 = model.generate_trace("inspect the pipe", max_new_tokens=6, temperature=1.0, num_samples=4,
                              generator=torch.Generator().manual_seed(3))
    g2 = model.generate_trace("inspect the pipe", max_new_tokens=6, temperature=1.0, num_samples=4,
                              generator=torch.Generator().manual_seed(3))
    assert g1["ids"].shape == (4, 6) and torch.equal(g1["ids"], g2["ids"])
    assert (g1["logprobs"] <= 0).all() and len(set(map(tuple, g1["ids"].tolist()))) > 1


def test_decode_steps_equal_teacher_forcing(tok):
    model = nano(tok, vision_kind="ternary_student").eval()
    with torch.no_grad():
        for b in model.blocks:        # open the image gates so the image really matters
            if b.xattn is not None:
                b.xattn.gate.fill_(0.7)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    task = "check the valves in the flooded basement"
    ref = model.generate_trace(task, image=image, max_new_tokens=10, temperature=1.0,
                               generator=torch.Generator().manual_seed(0), stop_at_eos=False)
    trace = ref["ids"]
    with torch.no_grad():
        # low level: prefill + decode steps vs. one causal pass over the whole sequence
        sep_state, cache, img, _ = model.start(task, image)
        step_logits = [model.lm_head(sep_state)]
        for t in range(trace.shape[1] - 1):
            logits, k, v = model.decode_step(trace[:, t:t + 1], cache.k, cache.v, img)
            cache.append(k, v)
            step_logits.append(logits[:, -1])
        prompt = torch.tensor([model.prompt_ids(task)])
        ids, mask = model._tokens([task], model.config.max_task_tokens)
        z_read, _ = model.read_memory(model.memory_encoding(ids, mask))
        h, _, _ = model.prefill(torch.cat([prompt, trace[:, :-1]], 1), z_read, img)
        full = model.lm_head(h[:, prompt.shape[1] - 1:])
        torch.testing.assert_close(torch.stack(step_logits, 1), full, atol=1e-4, rtol=0)
        # batched training forward (padded next to a longer task) gives the same log-probs
        ids2, mask2 = model._tokens([task, "a longer task: fly the drone over the old stadium roof"], 48)
        tr = torch.cat([trace, trace]); tmask = torch.ones_like(tr); tmask[1, 4:] = 0
        out = model(ids2, mask2, images=model.preprocess_image(image).expand(2, -1, -1, -1),
                    trace_ids=tr, trace_mask=tmask)
        torch.testing.assert_close(out["trace_logprobs"][0, :10], ref["logprobs"][0], atol=1e-4, rtol=0)
        assert out["trace_target"][1, 4] == tok.eos_id and (out["trace_target"][1, 5:] == -100).all()


def test_image_changes_the_selection_only_through_open_gates(tok):
    model = nano(tok, vision_kind="ternary_student").eval()
    image = np.zeros((64, 64, 3), np.uint8)
    image[32:] = 200
    task = "inspect the area shown"
    assert model.select(task, image=image)["probabilities"] == model.select(task)["probabilities"]
    with torch.no_grad():
        for b in model.blocks:
            if b.xattn is not None:
                b.xattn.gate.fill_(1.0)
    a, b = model.select(task, image=image)["probabilities"], model.select(task)["probabilities"]
    assert max(abs(a[k] - b[k]) for k in a) > 1e-4


def test_save_load_round_trip_gives_identical_outputs(tmp_path, trained):
    model, _ = trained
    path = tmp_path / "model.pt"
    model.save(path)
    again = BitGenModel.load(path)
    assert again.config == model.config and again.catalog.keys == model.catalog.keys
    ids, mask, _ = batch(model, TASKS)
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask)["robot_logits"], model(ids, mask)["robot_logits"],
                                   atol=0, rtol=0)
    task = TASKS[2][0]
    assert again.generate_trace(task, max_new_tokens=8)["ids"].tolist() == \
           model.generate_trace(task, max_new_tokens=8)["ids"].tolist()
    assert not list(tmp_path.glob(".*"))          # no temp file left behind
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="unreadable"):
        BitGenModel.load(path)
    with pytest.raises(ModelLoadError, match="not found"):
        BitGenModel.load(tmp_path / "nope.pt")


def test_bad_inputs_are_input_errors(tok):
    model = nano(tok).eval()
    with pytest.raises(InputError, match="empty"):
        model.select("   ")
    with pytest.raises(InputError, match="no vision encoder"):
        model.select("look", image=np.zeros((8, 8, 3), np.uint8))


def test_print_param_counts(capsys):
    print_param_counts(("nano",))
    out = capsys.readouterr().out
    assert "embeddings" in out and "backbone" in out and "nano" in out


class _Piece(torch.nn.Module):
    """Wraps one export piece; holds the model as a submodule so weights become initializers."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(self.model, *args)


def _onnx_run(module, args, names, dynamic):
    import io
    import warnings

    import onnxruntime as ort
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=names, dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


def test_lexical_memory_key_reads_the_max_of_the_texts_own_token_embeddings(tok):
    """memory_lexical: memory_key sees [mean-pooled state, max over the text's token
    embeddings]; padding never enters the max, and one word ("zone b" / "zone d") changes it."""
    model = nano(tok, memory_lexical=True).eval()
    d = model.config.d_model
    assert model.memory_key.in_features == 2 * d
    texts = ["pumps in zone b", "pumps in zone d", "pumps in zone b of the big warehouse"]
    ids, mask = model._tokens(texts, 16)
    with torch.no_grad():
        feats = model.memory_features(model.encode_text(ids, mask), model.embed(ids), mask)
        assert feats.shape == (3, 2 * d)
        torch.testing.assert_close(feats[:, :d], model.encode_text(ids, mask))
        for row in range(3):
            n = int(mask[row].sum())
            torch.testing.assert_close(feats[row, d:], model.embed(ids[row, :n]).amax(0))
        model.embed.weight[tok.pad_id].fill_(1e3)       # padding rows must not win the max
        again = model.memory_features(model.encode_text(ids, mask), model.embed(ids), mask)
        assert again[:2, d:].abs().max() < 1e2
        z = model.memory_encoding(ids, mask)
    assert z.shape == (3, model.config.memory_dim)
    assert not torch.equal(feats[0, d:], feats[1, d:])


def test_export_pieces_run_in_onnxruntime_with_integer_bitlinear(tok):
    from bitgen_core.quant import set_export_mode
    model = nano(tok, vision_kind="none").eval()
    cfg = model.config
    with torch.no_grad():
        for b in model.blocks:
            if b.xattn is not None:
                b.xattn.gate.fill_(0.5)
    set_export_mode(model, True)
    ids = torch.tensor([model.prompt_ids("inspect the hull of the boat")])
    z = torch.randn(1, cfg.memory_dim)
    img = torch.randn(1, cfg.n_image_tokens, cfg.d_model)
    img_mask = torch.ones(1, cfg.n_image_tokens, dtype=torch.bool)
    with torch.no_grad():
        h, k, v = model.prefill(ids, z, img, img_mask)
        prefill = _onnx_run(_Piece(model, BitGenModel.prefill), (ids, z, img, img_mask), ["ids", "z", "img", "img_mask"],
                            {"ids": {1: "L"}})
        got = prefill.run(None, {"ids": ids.numpy(), "z": z.numpy(), "img": img.numpy(),
                                 "img_mask": img_mask.numpy()})
        np.testing.assert_allclose(got[0], h.numpy(), atol=1e-4)
        np.testing.assert_allclose(got[1], k.numpy(), atol=1e-4)     # per-layer pre-rotary keys
        step = torch.tensor([[tok.encode("water")[0]]])
        decode = _onnx_run(_Piece(model, BitGenModel.decode_step), (step, k, v, img, img_mask),
                           ["ids", "past_k", "past_v", "img", "img_mask"], {"past_k": {3: "L"}, "past_v": {3: "L"}})
        k2, v2 = torch.randn(2, cfg.n_layers, 1, cfg.n_heads, 30, cfg.head_dim).unbind(0)
        ref = model.decode_step(step, k2, v2, img, img_mask)[0]
        got = decode.run(None, {"ids": step.numpy(), "past_k": k2.numpy(), "past_v": v2.numpy(),
                                "img": img.numpy(), "img_mask": img_mask.numpy()})[0]
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)   # another cache length, same graph
        t_ids, t_mask = model._tokens(["the drone is grounded", "zone b is flooded today"], 16)
        text = _onnx_run(_Piece(model, lambda mdl, i, m: mdl.memory_encoding(i, m)), (t_ids, t_mask),
                         ["ids", "mask"], {"ids": {0: "B", 1: "L"}, "mask": {0: "B", 1: "L"}})
        got = text.run(None, {"ids": t_ids.numpy(), "mask": t_mask.numpy()})[0]
        np.testing.assert_allclose(got, model.memory_encoding(t_ids, t_mask).numpy(), atol=1e-4)
        robot_emb = model.robot_embeddings()
        head = _onnx_run(_Piece(model, lambda mdl, s, e: mdl.select_head(s, e)[0]), (h[:, -1], robot_emb),
                         ["state", "robot_emb"], {"robot_emb": {0: "R"}})
        got = head.run(None, {"state": h[:, -1].numpy(), "robot_emb": robot_emb.numpy()})[0]
        probs = torch.sigmoid(model.select_head(h[:, -1], robot_emb)[0]).numpy()
        # 8 recurrent int8 steps: a rare rounding flip may move a logit a little, never far
        np.testing.assert_allclose(1 / (1 + np.exp(-got)), probs, atol=0.02)
    set_export_mode(model, False)


def test_training_read_reports_each_facts_coefficient_and_the_prefix_sees_its_magnitude(tok):
    """read_episodes returns a_i per fact (0 for padding) matching the deployment memory, and
    with memory_read_norm=False (the presets) a read scaled by s moves the prefix by s times
    as much: a weakly addressed fact is no longer normalised up to a full one."""
    from bitgen_core.model import FactEpisodes
    m = nano(tok).eval()
    assert m.config.memory_read_norm is False and m.memory_prefix_proj.norm is None
    ids, mask = m._tokens(["zone B of the warehouse is flooded", "the drone is grounded", ""], 16)
    facts = FactEpisodes(ids.view(1, 3, -1), mask.view(1, 3, -1))
    qids, qmask = m._tokens(["check the racking in zone B of the warehouse"], 16)
    with torch.no_grad():
        zq = m.memory_encoding(qids, qmask)
        z_read, _, coef = m.read_episodes(zq, facts)
        out = m(qids, qmask, memory=facts)
    assert coef.shape == (1, 3) and coef[0, 2] == 0
    torch.testing.assert_close(out["memory_coef"], coef)
    mem = m.new_memory()
    mem.write(m.fact_encoding("zone B of the warehouse is flooded"), "a")
    mem.write(m.fact_encoding("the drone is grounded"), "b")
    _, used = mem.read_with_facts(zq[0].double())
    ref = {f.fact_id: f.weight for f in used}
    assert coef[0, 0].item() == pytest.approx(ref["a"], rel=1e-3, abs=1e-4)
    assert coef[0, 1].item() == pytest.approx(ref["b"], rel=1e-3, abs=1e-4)
    with torch.no_grad():
        base = m.memory_tokens(torch.zeros(1, m.config.memory_dim))
        d1 = m.memory_tokens(z_read) - base
        d2 = m.memory_tokens(0.25 * z_read) - base
    torch.testing.assert_close(d2, 0.25 * d1, rtol=0.05, atol=1e-4)   # int8 activation grid
    legacy = BitGenModel(m.config.replace(memory_read_norm=True), tokenizer=m.tokenizer, pretrained=False)
    assert legacy.memory_prefix_proj.norm is not None
    # the presets gate the read; eval-mode training read == the deployment read of the same facts
    assert m.memory.gate > 0
    torch.testing.assert_close(z_read[0].double(), mem.read_fact(zq[0].double()), rtol=1e-4, atol=1e-5)
    linear = BitGenModel(m.config.replace(memory_gate=0.0), tokenizer=m.tokenizer, pretrained=False)
    assert linear.memory.gate == 0 and linear.new_memory().to_numpy().gate == 0


@pytest.mark.parametrize("recall", [False, True])
def test_scoped_training_read_matches_the_deployment_read_and_the_numpy_scope(tok, recall):
    m = nano(tok, memory_scope=True, memory_gate=0.0, memory_recall=recall).eval()
    zone = tok.encode("zone b", 8)
    with torch.no_grad():
        m.memory_scope.offset[zone] = 8.0           # "zone", "b" say where (alpha ~5); the rest ~0.05
    fact_texts = ["zone b of the warehouse is flooded", "the drone is grounded"]
    tasks = ["check the racking in zone b of the warehouse", "check the racking in zone d of the warehouse"]
    f_ids, f_mask = m._tokens(fact_texts, 16)
    episodes = FactEpisodes(torch.stack([f_ids, f_ids]), torch.stack([f_mask, f_mask]))
    qids, qmask = m._tokens(tasks, 16)
    mem = m.new_memory()
    for i, text in enumerate(fact_texts):
        m.write_fact(mem, f"f{i}", text)
    table = m.memory_scope.table(m.embed.weight)
    np.testing.assert_array_equal(mem.to_numpy().specificity, table)
    with torch.no_grad():
        s = m.fact_scope(episodes, qids, qmask)
        train_read = m(qids, qmask, memory=episodes)
        deploy_read = m(qids, qmask, memory=mem)["z_read"]
    want = [[scope_relevance(table, tok.encode(f, 16), tok.encode(t, 16)) for f in fact_texts] for t in tasks]
    np.testing.assert_allclose(torch.exp(-s).numpy(), want, rtol=1e-5)
    assert want[0][0] > 0.8 and want[1][0] < 0.05 and want[1][1] > 0.5   # zone d: flood out, drone in
    torch.testing.assert_close(train_read["memory_scope"], s)
    torch.testing.assert_close(train_read["z_read"], deploy_read, atol=2e-4, rtol=1e-4)
    sel = m.select(tasks[1], memory=mem)          # the single-task path reads scoped too
    assert sel["robots"] and len(mem) == 2


def test_a_checkpoint_loads_with_config_overrides_that_only_add_modules(tmp_path, tok):
    m = nano(tok).eval()
    m.save(tmp_path / "base.pt")
    scoped = BitGenModel.load(tmp_path / "base.pt", overrides={"memory_scope": True})
    assert scoped.memory_scope is not None and scoped.config.memory_scope
    ids, mask, _ = batch(m, TASKS[:2])
    with torch.no_grad():     # no facts: the scope changes nothing
        torch.testing.assert_close(scoped(ids, mask)["robot_logits"], m(ids, mask)["robot_logits"])
    with pytest.raises(ModelLoadError, match="overridden config"):
        BitGenModel.load(tmp_path / "base.pt", overrides={"memory_lexical": True})


def test_the_fact_term_starts_closed_and_counts_only_rows_with_facts():
    from bitgen_core.model import FactEpisodes
    torch.manual_seed(0)
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="none", memory_robot=True), pretrained=False).eval()
    assert model.selector.fact_gate.item() == 0 and model.selector.fact_proj is not None
    ids, mask = model._tokens(["inspect the roof", "carry the crate up the stairs"], 16)
    fids, fmask = model._tokens(["the drone is grounded", ""], 8)
    facts = FactEpisodes(fids.view(2, 1, -1), fmask.view(2, 1, -1))   # row 1 has no fact
    with torch.no_grad():
        closed = model(ids, mask, memory=facts)["robot_logits"]
        model.selector.fact_gate.fill_(2.0)
        opened = model(ids, mask, memory=facts)["robot_logits"]
    assert (opened[0] - closed[0]).abs().max() > 1e-4      # a row with a fact: the term acts
    assert torch.equal(opened[1], closed[1])                # a row without: exactly nothing
    plain = BitGenModel(BitGenConfig.preset("nano", vision_kind="none"), pretrained=False)
    assert plain.selector.fact_proj is None and plain.fact_part(torch.zeros(1, 4), torch.zeros(1, 4)) is None
