"""Larimar episodic memory: recall, exact forget, least-squares posterior, twins, KL, save/load."""

import numpy as np
import pytest
import torch

from bitgen_core.memory import EpisodicMemory
from bitgen_core.memory_np import EpisodicMemoryNP, least_squares_memory, make_keys, scope_relevance

torch.set_num_threads(1)
K, C, N = 32, 64, 24


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def facts(n=N, seed=0, dim=C):
    return np.random.default_rng(seed).standard_normal((n, dim))


def ls_fit(mem, z):
    return least_squares_memory(mem.keys, mem.prior_mean, mem.prior_precision, mem.address_ridge, z)


@pytest.fixture(params=["numpy", "torch"])
def memory(request):
    if request.param == "numpy":
        return EpisodicMemoryNP.create(K, C, seed=1)
    return EpisodicMemory(K, C, seed=1)


def _read(mem, z):
    return mem.read(z) if isinstance(mem, EpisodicMemoryNP) else mem.read_fact(z).numpy()


def test_write_then_read_back_each_fact(memory):
    z = facts()
    for i, zi in enumerate(z):
        memory.write(zi, f"f{i}")
    for i, zi in enumerate(z):
        assert cos(_read(memory, zi), zi) >= 0.99, i


def test_forget_collapses_that_fact_only(memory):
    z = facts()
    for i, zi in enumerate(z):
        memory.write(zi, f"f{i}")
    memory.forget("f5")
    assert cos(_read(memory, z[5]), z[5]) < 0.3
    for i, zi in enumerate(z):
        if i != 5:
            assert cos(_read(memory, zi), zi) >= 0.99, i
    assert "f5" not in memory.fact_ids and len(memory) == N - 1
    with pytest.raises(KeyError):
        memory.forget("f5")


def test_write_then_forget_equals_least_squares_of_remaining():
    mem = EpisodicMemoryNP.create(K, C, seed=2)
    z = facts(seed=3)
    for i, zi in enumerate(z):
        mem.write(zi, f"f{i}")
    for j in (0, 7, 23):
        mem.forget(f"f{j}")
    keep = [i for i in range(N) if i not in (0, 7, 23)]
    np.testing.assert_allclose(mem.memory, ls_fit(mem, z[keep]), atol=1e-5, rtol=0)
    fresh = EpisodicMemoryNP.create(K, C, seed=2)
    for i in keep:
        fresh.write(z[i], f"f{i}")
    np.testing.assert_allclose(mem.memory, fresh.memory, atol=1e-8)
    np.testing.assert_allclose(mem.precision, fresh.precision, atol=1e-8)
    # and it is not trivially the prior: the fit of all facts is far from it
    assert np.abs(ls_fit(mem, z) - mem.memory).max() > 0.1


def test_nonzero_prior_mean_is_the_regulariser_target():
    rng = np.random.default_rng(4)
    m0 = rng.standard_normal((K, C))
    mem = EpisodicMemoryNP(EpisodicMemoryNP.create(K, C).keys, prior_mean=m0, prior_precision=0.5)
    z = facts(5, seed=5)
    for zi in z:
        mem.write(zi)
    w = mem.address(z)
    direct = np.linalg.solve(0.5 * np.eye(K) + w.T @ w, 0.5 * m0 + w.T @ z)
    np.testing.assert_allclose(mem.memory, direct, atol=1e-10)
    for fid in mem.fact_ids:
        mem.forget(fid)
    np.testing.assert_allclose(mem.memory, m0, atol=1e-12)


def test_rewrite_same_id_replaces_the_fact():
    mem = EpisodicMemoryNP.create(K, C)
    z = facts(3, seed=6)
    mem.write(z[0], "drone")
    mem.write(z[1], "zone")
    mem.write(z[2], "drone")
    np.testing.assert_allclose(mem.memory, ls_fit(mem, z[[1, 2]]), atol=1e-10)


def test_read_with_facts_decomposes_the_read_exactly(memory):
    z = facts(6, seed=7)
    for i, zi in enumerate(z):
        memory.write(zi, f"f{i}")
    query = z[2] + 0.1 * np.random.default_rng(8).standard_normal(C)
    out, used = memory.read_with_facts(query)
    out = np.asarray(out)
    assert used[0].fact_id == "f2" and used[0].similarity > 0.9
    assert all(used[i].similarity >= used[i + 1].similarity for i in range(len(used) - 1))
    mem_np = memory if isinstance(memory, EpisodicMemoryNP) else memory.to_numpy()
    w = mem_np.address(query)
    prior_part = mem_np.prior_precision * w @ np.linalg.solve(mem_np.precision, mem_np.prior_mean)
    recon = prior_part + sum(f.weight * z[int(f.fact_id[1:])] for f in used)
    np.testing.assert_allclose(recon, out, atol=1e-8)
    assert len(memory.read_with_facts(query, top_k=2)[1]) == 2
    assert {f.fact_id for f in memory.read_with_facts(query, min_similarity=0.9)[1]} == {"f2"}


def test_torch_and_numpy_deployment_agree():
    tm = EpisodicMemory(K, C, seed=9)
    nm = EpisodicMemoryNP(tm.keys.double().numpy(), prior_precision=tm.prior_precision,
                          address_ridge=tm.address_ridge)
    z = facts(seed=10)
    for i, zi in enumerate(z):
        tm.write(zi, f"f{i}")
        nm.write(zi, f"f{i}")
    for fid in ("f3", "f11"):
        tm.forget(fid)
        nm.forget(fid)
    np.testing.assert_allclose(tm.state_memory.numpy(), nm.memory, atol=1e-5)
    np.testing.assert_allclose(tm.state_precision.numpy(), nm.precision, atol=1e-5)
    q = facts(4, seed=11)
    np.testing.assert_allclose(tm.read_fact(q).numpy(), nm.read(q), atol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_split_keys_address_with_the_first_dims_and_return_the_whole_fact(kind):
    """address_dims: the address ignores z's content part, the read still returns it all,
    and forget stays exact."""
    da = 40
    mem = EpisodicMemoryNP(make_keys(K, C, seed=2, address_dims=da)) if kind == "numpy" \
        else EpisodicMemory(K, C, seed=2, address_dims=da)
    keys = mem.keys if kind == "numpy" else mem.keys.numpy()
    assert np.all(keys[:, da:] == 0) and np.allclose(keys[:, :da] @ keys[:, :da].T, np.eye(K), atol=1e-6)
    z = facts(8, seed=3)
    moved = z.copy()
    moved[:, da:] = facts(8, seed=4)[:, da:]                  # other content, same address part
    addr = (lambda x: mem.address(x)) if kind == "numpy" else (lambda x: mem.address(torch.from_numpy(x)).numpy())
    np.testing.assert_allclose(addr(z), addr(moved), atol=1e-6)
    empty = _read(mem, z[0])
    for i, zi in enumerate(z):
        mem.write(zi, f"f{i}")
    for i, zi in enumerate(z):
        assert cos(_read(mem, zi), zi) >= 0.99, i             # content part included
    for i in range(8):
        mem.forget(f"f{i}")
    np.testing.assert_allclose(_read(mem, z[0]), empty, atol=1e-9)


def test_batched_episodes_match_numpy_least_squares_and_masking():
    tm = EpisodicMemory(K, C, seed=12).double()
    rng = np.random.default_rng(13)
    with torch.no_grad():
        tm.prior_mean.normal_()
    z = torch.from_numpy(rng.standard_normal((3, N, C)))
    mask = torch.ones(3, N)
    mask[1, 10:] = 0  # episode 1 has only 10 facts, the rest is padding
    memory, prec, w = tm.write_episode(z, mask)
    for b in range(3):
        n = 10 if b == 1 else N
        ref = least_squares_memory(tm.keys.numpy(), tm.prior_mean.detach().numpy(),
                                   tm.prior_precision, tm.address_ridge, z[b, :n].numpy())
        np.testing.assert_allclose(memory[b].detach().numpy(), ref, atol=1e-5)
    z_read, _ = tm.read(memory, z)
    for b, n in ((0, N), (1, 10)):
        for i in range(n):
            assert cos(z_read[b, i].detach().numpy(), z[b, i].numpy()) >= 0.99
    # the batched closed form equals the sequential single-fact path
    tm.reset()
    for zi in z[0]:
        tm.write(zi)
    np.testing.assert_allclose(tm.state_memory.numpy(), memory[0].detach().numpy(), atol=1e-6)


def test_training_path_is_differentiable_and_samples():
    tm = EpisodicMemory(K, C, address_std=0.05, seed=14)
    z = torch.randn(2, 8, C, requires_grad=True)
    tm.train()
    z_read, kl = tm(z, z)
    loss = (z_read - z).pow(2).mean() + 1e-3 * kl
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert tm.prior_mean.grad is not None and torch.isfinite(tm.prior_mean.grad).all()
    a = tm.read(tm.write_episode(z)[0], z, sample=True)[0]
    b = tm.read(tm.write_episode(z)[0], z, sample=True)[0]
    assert not torch.allclose(a, b)  # reparameterised sampling of the addresses
    tm.eval()
    torch.testing.assert_close(tm(z, z)[0], tm(z, z)[0])


def test_addressing_kl_matches_gaussian_kl():
    tm = EpisodicMemory(K, C, address_std=0.3)
    w = torch.randn(4, 5, K)
    q = torch.distributions.Normal(w, 0.3)
    p = torch.distributions.Normal(torch.zeros_like(w), 1.0)
    expect = torch.distributions.kl_divergence(q, p).sum(-1).mean()
    torch.testing.assert_close(tm.addressing_kl(w), expect, rtol=1e-5, atol=1e-5)


def test_memory_kl_matches_column_wise_multivariate_normal_kl():
    tm = EpisodicMemory(8, 5, prior_precision=0.7).double()
    with torch.no_grad():
        tm.prior_mean.normal_()
    memory, prec, _ = tm.write_episode(torch.randn(2, 4, 5, dtype=torch.float64))
    expect = 0.0
    for b in range(2):
        for c in range(5):
            q = torch.distributions.MultivariateNormal(memory[b, :, c], precision_matrix=prec[b])
            p = torch.distributions.MultivariateNormal(tm.prior_mean[:, c],
                                                       covariance_matrix=torch.eye(8, dtype=torch.float64) / 0.7)
            expect = expect + torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(tm.memory_kl(memory, prec), expect / 2)
    m0_prec = 0.7 * torch.eye(8, dtype=torch.float64).expand(1, 8, 8)
    with torch.no_grad():
        assert float(tm.memory_kl(tm.prior_mean.unsqueeze(0), m0_prec)) == pytest.approx(0.0, abs=1e-9)


def test_save_load_roundtrip_and_interchange(tmp_path):
    nm = EpisodicMemoryNP.create(K, C, seed=15)
    z = facts(5, seed=16)
    for i, zi in enumerate(z):
        nm.write(zi, f"fact {i}")
    nm.forget("fact 1")
    nm.save(tmp_path / "m.npz")
    back = EpisodicMemoryNP.load(tmp_path / "m.npz")
    assert back.fact_ids == nm.fact_ids
    np.testing.assert_array_equal(back.memory, nm.memory)
    np.testing.assert_array_equal(back.read(z), nm.read(z))
    back.forget("fact 0")  # loaded memories keep working exactly
    np.testing.assert_allclose(back.memory, ls_fit(back, z[[2, 3, 4]]), atol=1e-8)

    tm = EpisodicMemory(K, C, seed=99)
    tm.load(tmp_path / "m.npz")
    np.testing.assert_allclose(tm.read_fact(z).numpy(), nm.read(z), atol=1e-10)
    tm.write(z[1], "fact 1")
    tm.save(tmp_path / "t.npz")
    assert EpisodicMemoryNP.load(tmp_path / "t.npz").fact_ids == ["fact 0", "fact 2", "fact 3",
                                                                  "fact 4", "fact 1"]


def test_load_rejects_inconsistent_file(tmp_path):
    nm = EpisodicMemoryNP.create(K, C)
    nm.write(facts(1)[0], "a")
    state = nm.state()
    state["memory"] = state["memory"] + 0.01
    np.savez(tmp_path / "bad.npz", **state)
    with pytest.raises(ValueError, match="corrupt"):
        EpisodicMemoryNP.load(tmp_path / "bad.npz")


def test_rejects_bad_encodings():
    nm = EpisodicMemoryNP.create(K, C)
    with pytest.raises(ValueError):
        nm.write(np.ones(C + 1))
    with pytest.raises(ValueError):
        nm.write(np.full(C, np.nan))
    with pytest.raises(ValueError):
        EpisodicMemoryNP.create(K, C, prior_precision=0.0)


def test_checkpoint_load_refreshes_addressing_and_export_matches_training():
    src, dst = EpisodicMemory(K, C, seed=20), EpisodicMemory(K, C, seed=21)
    dst.load_state_dict(src.state_dict())
    torch.testing.assert_close(dst.addresser, src.addresser)
    z = facts(4, seed=22)
    for i, zi in enumerate(z):
        src.write(zi, str(i))
        dst.write(zi, str(i))
    np.testing.assert_array_equal(dst.read_fact(z).numpy(), src.read_fact(z).numpy())
    # the exported numpy memory addresses exactly like the trained module's batched path
    nm = src.to_numpy()
    w_train = src.address(torch.from_numpy(z).float()).numpy()
    np.testing.assert_allclose(nm.address(z), w_train, atol=1e-5)


def test_read_coefficients_are_the_deployment_weights_of_each_fact():
    """a_i = w_q C^-1 w_i^T on a batched episode equals `read_with_facts`'s weight of fact i
    after writing the same facts one by one; absent (zero-address) facts get 0."""
    tm = EpisodicMemory(K, C, seed=15).double()
    z = torch.from_numpy(facts(5, seed=16)).unsqueeze(0)               # (1, 5, C)
    present = torch.tensor([[1, 1, 1, 0, 1]], dtype=torch.float64)
    w = tm.address(z) * present.unsqueeze(-1)
    q = torch.from_numpy(facts(1, seed=17)[0] + z[0, 1].numpy())
    coef = tm.read_coefficients(tm.address(q)[None], w)[0]
    assert coef[3] == 0
    nm = tm.to_numpy()
    for i in (0, 1, 2, 4):
        nm.write(z[0, i].numpy(), f"f{i}")
    _, used = nm.read_with_facts(q.numpy())
    ref = {f.fact_id: f.weight for f in used}
    for i in (0, 1, 2, 4):
        assert float(coef[i]) == pytest.approx(ref[f"f{i}"], abs=1e-6)   # float32 addresser
    assert int(coef.argmax()) == 1
    # differentiable w.r.t. the query and the facts (what stage 2's relevance loss trains)
    zq = q.clone().requires_grad_(True)
    zf = z.clone().requires_grad_(True)
    tm.read_coefficients(tm.address(zq)[None], tm.address(zf)).sum().backward()
    assert zq.grad.abs().sum() > 0 and zf.grad.abs().sum() > 0


def test_gated_read_is_the_same_in_numpy_torch_deployment_and_torch_training():
    """With a gate k > 0: z_r = lam w C^-1 M0 + sum_i sigmoid(k (a_i - t)) z_i, identical in the
    numpy twin, the torch deployment memory and the batched training read; gate 0 is the
    plain read w M; save/load keeps the gate and an older file without it reads linearly."""
    tm = EpisodicMemory(K, C, seed=18, gate=12.0, gate_threshold=0.5).double()
    with torch.no_grad():
        tm.prior_mean.normal_(std=0.1)
    tm.reset()
    z = facts(3, seed=19)
    for i, zi in enumerate(z):
        tm.write(zi, f"f{i}")
    nm = tm.to_numpy()
    assert (nm.gate, nm.gate_threshold) == (12.0, 0.5)
    q = np.stack([z[0] + 0.05 * facts(1, seed=20)[0], facts(1, seed=21)[0]])
    w = nm.address(q)
    wf = nm.address(z)
    a = (wf @ np.linalg.solve(nm.precision, w.T)).T
    prior = nm.prior_precision * np.linalg.solve(nm.precision, w.T).T @ nm.prior_mean
    g = 1 / (1 + np.exp(-12.0 * (a - 0.5)))
    expect = prior + g @ z
    np.testing.assert_allclose(nm.read(q), expect, atol=1e-8)
    np.testing.assert_allclose(tm.read_fact(q).numpy(), expect, atol=1e-8)
    out, used = nm.read_with_facts(q[0])
    np.testing.assert_allclose(out, expect[0], atol=1e-8)
    assert {f.fact_id: f.weight for f in used}["f0"] == pytest.approx(a[0, 0], abs=1e-8)
    np.testing.assert_allclose(tm.read_with_facts(q[0])[0].numpy(), expect[0], atol=1e-8)
    # training read: padded episodes, the absent fact gets no share
    zt = torch.from_numpy(np.concatenate([z, np.zeros((1, C))]))[None]
    present = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    wt = tm.address(zt) * present.unsqueeze(-1)
    z_read, a_t = tm.read_gated(tm.address(torch.from_numpy(q[:1])), wt, zt, present)
    np.testing.assert_allclose(z_read[0].detach().numpy(), expect[0], atol=1e-6)
    np.testing.assert_allclose(a_t[0, :3].detach().numpy(), a[0], atol=1e-6)
    # the gate keeps a fact addressed below the threshold out of the read
    assert a[0, 0] > 0.9 and g[0, 0] > 0.99
    # persistence: the gate survives save/load; a file without it is the linear read
    state = nm.state()
    again = EpisodicMemoryNP.from_state(state)
    np.testing.assert_allclose(again.read(q), expect, atol=1e-10)
    legacy = EpisodicMemoryNP.from_state({k: v for k, v in state.items() if not k.startswith("gate")})
    assert legacy.gate == 0
    np.testing.assert_allclose(legacy.read(q), w @ nm.memory, atol=1e-10)
    assert nm.fresh().gate == 12.0 and len(nm.fresh()) == 0
    with pytest.raises(ValueError):
        EpisodicMemoryNP.create(K, C, gate=-1.0)


# --- scope: per-token specificity (memory_np module doc) ------------------------------------
V = 50


def scoped(kind):
    alpha = np.zeros(V)
    alpha[[5, 6]] = 3.0           # "zone", "b": the words that say where
    alpha[7] = 0.5
    if kind == "numpy":
        return EpisodicMemoryNP(make_keys(K, C, 1), specificity=alpha)
    mem = EpisodicMemory(K, C, seed=1)
    mem.specificity = alpha
    return mem


def test_scope_relevance_is_exp_of_the_missing_tokens_specificity():
    alpha = np.array([0.0, 1.0, 2.0, 0.25])
    assert scope_relevance(alpha, [1, 2, 3, 0], [1, 2, 3]) == 1.0                    # all named (0 costs 0)
    assert scope_relevance(alpha, [1, 2, 3], [1, 9]) == pytest.approx(np.exp(-2.25))
    assert scope_relevance(alpha, [2, 2], []) == pytest.approx(np.exp(-4.0))          # per position


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_a_scoped_fact_counts_only_for_queries_that_name_its_tokens(kind):
    mem = scoped(kind)
    z = facts(3, seed=4)
    mem.write(z[0], "flood", tokens=[5, 6, 1, 2])        # "zone b (of the warehouse) is flooded"
    q = z[0] + 0.1 * z[1]
    read = lambda toks: np.asarray(_scoped_read(mem, q, toks))   # noqa: E731
    unscoped = read(None)
    np.testing.assert_allclose(read([9, 5, 6, 3]), unscoped, rtol=1e-9, atol=1e-9)   # names zone b
    empty = np.asarray(_read(mem.fresh() if kind == "numpy" else _fresh_torch(mem), q))
    # "zone d": b is missing, the fact enters with exp(-3) of its share
    full_share, part = unscoped - empty, read([9, 5, 3]) - empty
    np.testing.assert_allclose(part, np.exp(-3.0) * full_share, rtol=1e-6, atol=1e-9)
    # a fact written without tokens is unscoped: it counts for every query
    mem.write(z[2], "plain")
    both = read([9, 5, 6])
    mem.forget("flood")
    np.testing.assert_allclose(read([1]), read(None), rtol=1e-9, atol=1e-9)
    mem.forget("plain")
    np.testing.assert_allclose(read([9, 5, 6]), empty, atol=1e-9)
    assert np.abs(both - empty).max() > 1e-3


def _fresh_torch(mem):
    m = EpisodicMemory(K, C, seed=1)
    m.specificity = mem.specificity
    return m


def _scoped_read(mem, z, toks):
    if isinstance(mem, EpisodicMemoryNP):
        return mem.read(z, toks)
    return mem.read_fact(z, toks).numpy()


def test_scoped_memory_reports_relevance_and_round_trips_through_save_and_the_torch_twin(tmp_path):
    mem = scoped("numpy")
    z = facts(3, seed=5)
    mem.write(z[0], "flood", tokens=[5, 6, 1])
    mem.write(z[1], "drone", tokens=[1, 2])
    mem.write(z[2], "plain")
    _, used = mem.read_with_facts(z[0], query_tokens=[5, 1, 2])
    rel = {f.fact_id: f.relevance for f in used}
    assert rel == pytest.approx({"flood": np.exp(-3.0), "drone": 1.0, "plain": 1.0})
    _, kept = mem.read_with_facts(z[0], query_tokens=[5, 1, 2], min_relevance=0.5)
    assert {f.fact_id for f in kept} == {"drone", "plain"}
    mem.save(tmp_path / "m.npz")
    back = EpisodicMemoryNP.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.specificity, mem.specificity)
    for toks in ([5, 1, 2], [5, 6], None):
        np.testing.assert_allclose(back.read(z[1], toks), mem.read(z[1], toks), rtol=1e-12)
    twin = EpisodicMemory(K, C, seed=1)
    twin.load(tmp_path / "m.npz")
    for toks in ([5, 1, 2], [5, 6]):
        np.testing.assert_allclose(twin.read_fact(z[1], toks).numpy(), mem.read(z[1], toks), rtol=1e-9)
    again = twin.to_numpy()
    np.testing.assert_allclose(again.read(z[1], [5]), mem.read(z[1], [5]), rtol=1e-9)
    back.forget("flood")
    assert "flood" not in back._tokens and back.relevance([5]).tolist() == [1.0, 1.0]


def test_scoped_writes_refuse_token_ids_outside_the_table():
    mem = scoped("numpy")
    with pytest.raises(ValueError, match="token ids"):
        mem.write(facts(1)[0], "x", tokens=[V])
    with pytest.raises(ValueError, match="token ids"):
        mem.write(facts(1)[0], "x", tokens=[])
    assert len(mem) == 0
    with pytest.raises(ValueError, match="specificity"):
        EpisodicMemoryNP(make_keys(K, C, 1), specificity=-np.ones(3))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_the_recall_read_gives_every_fact_in_scope_its_own_encoding(kind, tmp_path):
    """recall: z_r = lam w C^-1 M0 + sum_i r_i z_i (M0 = 0 here), whatever the query's
    address; forgetting a fact takes exactly its encoding back out; save/load keeps it."""
    mem = scoped(kind)
    mem.recall = True
    z = facts(3, seed=6)
    mem.write(z[0], "flood", tokens=[5, 6])
    mem.write(z[1], "drone", tokens=[1])
    q = facts(1, seed=9)[0]                                   # unlike either fact
    np.testing.assert_allclose(_scoped_read(mem, q, [5, 6, 1]), z[0] + z[1], atol=1e-9)
    np.testing.assert_allclose(_scoped_read(mem, q, [5, 1]), np.exp(-3.0) * z[0] + z[1], atol=1e-9)
    np.testing.assert_allclose(_scoped_read(mem, q, None), z[0] + z[1], atol=1e-9)   # unscoped
    mem.forget("flood")
    np.testing.assert_allclose(_scoped_read(mem, q, [5, 6, 1]), z[1], atol=1e-9)
    (mem if kind == "numpy" else mem.to_numpy()).save(tmp_path / "r.npz")
    back = EpisodicMemoryNP.load(tmp_path / "r.npz")
    assert back.recall is True
    np.testing.assert_allclose(back.read(q, [1]), z[1], atol=1e-9)
