"""RuntimeMemory: facts change the selection at once, forget restores it exactly, facts persist
atomically and are replayed at load, another process's edits are picked up, guards apply."""
from __future__ import annotations

import numpy as np
import pytest

from bitgen_core.audit import AuditLog, read_audit
from bitgen_core.auth import EditGuard, EditToken
from bitgen_core.limits import Limits
from bitgen_core.runtime import BitGenRuntime

TASK = "fly over the flooded zone B and photograph it"


def _probs(rt):
    sel = rt.select(TASK, max_trace_tokens=0)
    return np.array([dict(zip(sel.robots, sel.confidences))[k] for k in rt.catalog.keys])


def test_write_changes_selection_and_forget_restores_it_exactly(exported):
    rt = BitGenRuntime.load(exported.directory)
    before = _probs(rt)
    r = rt.memory.write("zone_b", "zone B is flooded and the drone is grounded")
    assert r.success and r.count == 1
    during = _probs(rt)
    assert np.abs(during - before).max() > 1e-4
    assert rt.select(TASK, max_trace_tokens=0).memory_keys_used in ([], ["zone_b"])
    assert rt.select("zone B is flooded and the drone is grounded", max_trace_tokens=0).memory_keys_used == ["zone_b"]
    assert rt.memory.forget("zone_b").success
    np.testing.assert_allclose(_probs(rt), before, atol=1e-6)
    miss = rt.memory.forget("zone_b")
    assert not miss.success and "no fact" in miss.message


def test_facts_persist_and_are_replayed_at_load(exported, tmp_path):
    path = tmp_path / "facts.json"
    a = BitGenRuntime.load(exported.directory, memory_path=path)
    assert a.memory.write("stairs", "the stairs of building C are blocked").success
    assert a.memory.write("drone", "the drone battery is empty").success
    b = BitGenRuntime.load(exported.directory, memory_path=path)
    assert [f.key for f in b.memory.list()] == ["stairs", "drone"]
    np.testing.assert_allclose(_probs(a), _probs(b), atol=1e-6)
    # an edit by another process (here: another runtime on the same file) is picked up
    assert b.memory.forget("drone").success
    assert [f.key for f in a.memory.list()] == ["stairs"]
    np.testing.assert_allclose(_probs(a), _probs(b), atol=1e-6)


def test_save_and_load_whole_fact_sets(exported, tmp_path):
    rt = BitGenRuntime.load(exported.directory)
    rt.memory.write("k1", "the humanoid is charging")
    rt.memory.save(tmp_path / "copy.json")
    other = BitGenRuntime.load(exported.directory)
    assert other.memory.load(tmp_path / "copy.json").success
    assert [f.key for f in other.memory.list()] == ["k1"]
    np.testing.assert_allclose(_probs(rt), _probs(other), atol=1e-6)


def test_limits_are_enforced(exported):
    rt = BitGenRuntime.load(exported.directory, limits=Limits(max_fact_chars=20, max_facts=2))
    assert not rt.memory.write("k", "x" * 21).success
    assert not rt.memory.write("bad key!", "short").success
    assert not rt.memory.write("k", "").success
    assert rt.memory.write("a", "one").success and rt.memory.write("b", "two").success
    full = rt.memory.write("c", "three")
    assert not full.success and "full" in full.message
    assert rt.memory.write("a", "one again").success   # replacing is not growing
    assert len(rt.memory.list()) == 2


def test_edit_guard_and_audit(exported, tmp_path):
    guard = EditGuard(EditToken(b"correct-horse-battery", "test"), edits_per_minute=None)
    audit = AuditLog(tmp_path / "audit.log")
    rt = BitGenRuntime.load(exported.directory, memory_path=tmp_path / "m.json", edit_guard=guard,
                            audit_log=audit)
    denied = rt.memory.write("k", "the drone is grounded", token="wrong-token-value")
    assert not denied.success and "wrong" in denied.message
    assert rt.memory.write("k", "the drone is grounded", token="correct-horse-battery").success
    assert not rt.memory.forget("k").success           # no token
    records = list(read_audit(tmp_path / "audit.log"))
    assert [(r["action"], r["outcome"]) for r in records] == [("write", "refused"), ("write", "ok"),
                                                               ("forget", "refused")]
    assert records[1]["fact_sha256"]
    guard.read_only = True
    assert "read-only" in rt.memory.write("j", "x", token="correct-horse-battery").message


def test_corrupt_store_is_moved_aside_with_recover(exported, tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{garbage")
    from bitgen_core.errors import StoreCorruptError
    with pytest.raises(StoreCorruptError):
        BitGenRuntime.load(exported.directory, memory_path=path)
    rt = BitGenRuntime.load(exported.directory, memory_path=path, recover_memory=True)
    assert rt.memory.last_recovery and rt.memory.list() == []
    assert list(tmp_path.glob("m.json.corrupt-*"))


def test_exported_memory_keeps_the_read_gate_and_reads_like_the_torch_model(exported):
    """The preset's relevance gate travels in memory.npz; the runtime's read of a stored fact
    (replayed into a fresh memory) equals the torch model's deployment read."""
    import torch

    from bitgen_core.model import BitGenModel
    model = BitGenModel.load(exported.checkpoint)
    rt = BitGenRuntime.load(exported.directory)
    assert rt.memory._base.gate == model.config.memory_gate > 0
    fact, task = "zone B of the warehouse is flooded", "check the racking in zone B of the warehouse"
    assert rt.memory.write("zone_b", fact).success
    assert rt.memory._mem.gate == model.config.memory_gate
    mem = model.new_memory()
    mem.write(model.fact_encoding(fact), "zone_b")
    with torch.no_grad():
        ids, mask = model._tokens([task], model.config.max_task_tokens)
        z_q = model.memory_encoding(ids, mask)[0]
    ref = mem.read_fact(z_q.double()).numpy()
    got, _ = rt.memory.read(rt._encode_ids(rt.tokenizer.encode(task, rt.config.max_task_tokens)))
    np.testing.assert_allclose(got, ref, atol=1e-3 * max(1.0, np.abs(ref).max()))


def test_exported_scope_reads_like_the_torch_model_and_reports_facts_in_scope(exported, tmp_path):
    """memory.npz carries the trained specificity table; the runtime scopes each stored fact
    by the task's tokens exactly as the torch deployment read does, and lists as used only
    the facts in scope (a fact about zone B is not used for a task in zone D)."""
    import torch

    from bitgen_core.model import BitGenModel
    model = BitGenModel.load(exported.checkpoint)
    rt = BitGenRuntime.load(exported.directory, memory_path=tmp_path / "facts.json")
    np.testing.assert_array_equal(rt.memory._base.specificity, model.memory_scope.table(model.embed.weight))
    facts = {"zone_b": "zone B of the warehouse is flooded", "drone": "the drone is grounded"}
    mem = model.new_memory()
    for key, text in facts.items():
        assert rt.memory.write(key, text).success
        model.write_fact(mem, key, text)
    used = {}
    for task in ("check the racking in zone B of the warehouse", "check the racking in zone D of the warehouse"):
        ids = rt.tokenizer.encode(task, rt.config.max_task_tokens)
        got, used[task.split()[5]] = rt.memory.read(rt._encode_ids(ids), ids)
        with torch.no_grad():
            t_ids, t_mask = model._tokens([task], model.config.max_task_tokens)
            z_q = model.memory_encoding(t_ids, t_mask)[0]
        ref = mem.read_fact(z_q.double(), ids).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-3 * max(1.0, np.abs(ref).max()))
    rel = {f.fact_id: f.relevance for f in rt.memory._mem.read_with_facts(
        got.astype(np.float64), query_tokens=ids)[1]}
    assert rel["zone_b"] < 0.01 < 0.5 < rel["drone"]
    assert "zone_b" in used["B"] and "zone_b" not in used["D"]
    # a restart replays the stored facts with their tokens: the same scoped read
    restarted = BitGenRuntime.load(exported.directory, memory_path=tmp_path / "facts.json")
    again, _ = restarted.memory.read(restarted._encode_ids(ids), ids)
    np.testing.assert_allclose(again, got, rtol=1e-6, atol=1e-7)


def test_the_selectors_fact_term_reads_the_facts_part_of_the_memory_like_the_torch_model(exported):
    """config.memory_robot: the selector graph takes z_read minus an empty memory's read. It is
    exactly zero with nothing written, moves the selection once a fact is in, and is the torch
    model's own `fact_part` (the fixture's nano model has the term, gate 1)."""
    import torch

    from bitgen_core.model import BitGenModel
    rt = BitGenRuntime.load(exported.directory)
    assert rt._selector_fact
    empty = rt._start(TASK, None, {})
    assert empty.fact is not None and not empty.fact.any()
    assert rt.memory.write("drone", "the drone is grounded for maintenance").success
    prompt = rt._start(TASK, None, {})
    assert np.abs(prompt.fact).max() > 1e-3
    with_fact = rt._s["selector"].run(["logits"], rt._selector_feeds(prompt))[0]
    zeroed = rt._s["selector"].run(["logits"], {**rt._selector_feeds(prompt), "fact": np.zeros_like(prompt.fact)})[0]
    assert np.abs(with_fact - zeroed).max() > 1e-3          # the term is part of the answer
    model = BitGenModel.load(exported.checkpoint).eval()
    mem = model.new_memory()
    model.write_fact(mem, "drone", "the drone is grounded for maintenance")
    with torch.no_grad():
        _, _, _, fact = model.start(TASK, None, mem)
        _, _, _, none = model.start(TASK, None, None)
    assert none is None
    np.testing.assert_allclose(fact.numpy(), prompt.fact, atol=1e-4)
