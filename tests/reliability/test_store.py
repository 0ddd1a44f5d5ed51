"""MemoryStore: round trip, damage detection, recovery that never deletes, inter-process lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitgen_core.errors import InputError, MemoryEditError, StoreCorruptError
from bitgen_core.store import (Fact, MemoryStore, atomic_write_bytes, clean_stale_temps,
                               text_sha256)

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("store_writer.py")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_round_trip_keeps_facts_order_and_hashes(tmp_path):
    store = MemoryStore(tmp_path / "mem.json")
    assert store.load() == []
    store.add("drone_grounded", "the drone is grounded")
    store.add("zone_b", "zone B is flooded — use the legged robot ✓")
    store.replace("drone_grounded", "the drone is grounded until noon")

    facts = MemoryStore(tmp_path / "mem.json").load()
    assert [f.key for f in facts] == ["zone_b", "drone_grounded"]
    assert facts[1].text == "the drone is grounded until noon"
    assert all(f.sha256 == text_sha256(f.text) for f in facts)
    assert facts[0].written_at <= facts[1].written_at

    removed = store.remove("zone_b")
    assert removed.key == "zone_b"
    assert [f.key for f in store.load()] == ["drone_grounded"]
    assert store.generation == 4


def test_add_existing_key_and_remove_missing_key_are_clear_errors(tmp_path):
    store = MemoryStore(tmp_path / "mem.json")
    store.add("k", "one")
    with pytest.raises(MemoryEditError, match="exists"):
        store.add("k", "two")
    with pytest.raises(MemoryEditError, match="no fact with key 'nope'"):
        store.remove("nope")
    assert [f.text for f in store.load()] == ["one"]


def test_max_facts_is_enforced(tmp_path):
    store = MemoryStore(tmp_path / "mem.json", max_facts=2)
    store.add("a", "1")
    store.add("b", "2")
    with pytest.raises(MemoryEditError, match="memory is full"):
        store.add("c", "3")
    assert len(store.load()) == 2


def test_lone_surrogate_text_is_refused_not_written(tmp_path):
    store = MemoryStore(tmp_path / "mem.json")
    with pytest.raises(InputError, match="invalid unicode"):
        store.add("k", "bad \ud800 text")
    assert not (tmp_path / "mem.json").exists()


def _tamper(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_checksum_mismatch_is_detected(tmp_path):
    path = tmp_path / "mem.json"
    MemoryStore(path).add("k", "the drone is grounded")
    _tamper(path, lambda d: d["payload"]["facts"][0].update(
        text="the drone is available", sha256=text_sha256("the drone is available")))
    with pytest.raises(StoreCorruptError, match="checksum mismatch"):
        MemoryStore(path).load()


def test_fact_hash_mismatch_is_detected_even_with_a_recomputed_checksum(tmp_path):
    import hashlib
    from bitgen_core.store import _canonical

    path = tmp_path / "mem.json"
    MemoryStore(path).add("k", "the drone is grounded")

    def edit(doc):
        doc["payload"]["facts"][0]["text"] = "forged"
        doc["checksum"] = "sha256:" + hashlib.sha256(_canonical(doc["payload"])).hexdigest()

    _tamper(path, edit)
    with pytest.raises(StoreCorruptError, match="malformed"):
        MemoryStore(path).load()


@pytest.mark.parametrize("cut", [1, 10, 0.5, -3])
def test_truncated_file_is_detected(tmp_path, cut):
    path = tmp_path / "mem.json"
    store = MemoryStore(path)
    for i in range(5):
        store.add(f"k{i}", f"fact number {i}")
    raw = path.read_bytes()
    n = int(len(raw) * cut) if isinstance(cut, float) else cut % len(raw)
    path.write_bytes(raw[:n])
    with pytest.raises(StoreCorruptError, match="corrupt"):
        MemoryStore(path).load()


def test_empty_and_garbage_files_are_detected(tmp_path):
    path = tmp_path / "mem.json"
    for content in (b"", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'{"format": "other"}'):
        path.write_bytes(content)
        with pytest.raises(StoreCorruptError):
            MemoryStore(path).load()


def test_version_mismatch_has_a_clear_message(tmp_path):
    path = tmp_path / "mem.json"
    MemoryStore(path).add("k", "v")
    _tamper(path, lambda d: d.update(version=99))
    with pytest.raises(StoreCorruptError) as info:
        MemoryStore(path).load()
    msg = str(info.value)
    assert "version 99" in msg and "reads version 1" in msg and "\n" not in msg


def test_recover_moves_bad_file_aside_and_starts_empty(tmp_path):
    path = tmp_path / "mem.json"
    MemoryStore(path).add("k", "the drone is grounded")
    path.write_bytes(path.read_bytes()[:-20])
    bad = path.read_bytes()

    store = MemoryStore(path, recover=True)
    assert store.load() == []
    aside = sorted(tmp_path.glob("mem.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bad  # kept byte for byte
    assert "moved it aside to " + aside[0].name in store.last_recovery
    assert not path.exists()

    # a second corrupt file does not overwrite the first one kept aside
    path.write_bytes(b"{not json")
    assert MemoryStore(path, recover=True).load() == []
    assert len(list(tmp_path.glob("mem.json.corrupt-*"))) == 2

    store.add("k2", "fresh start")
    assert [f.key for f in MemoryStore(path).load()] == ["k2"]


def test_save_over_a_corrupt_file_keeps_the_corrupt_file(tmp_path):
    path = tmp_path / "mem.json"
    path.write_bytes(b"{half a file")
    MemoryStore(path).save([Fact.new("a", "b")])
    assert [f.key for f in MemoryStore(path).load()] == ["a"]
    assert [p.read_bytes() for p in tmp_path.glob("mem.json.corrupt-*")] == [b"{half a file"]


def test_edit_without_recover_refuses_to_touch_a_corrupt_file(tmp_path):
    path = tmp_path / "mem.json"
    path.write_bytes(b"{half a file")
    with pytest.raises(StoreCorruptError):
        MemoryStore(path).add("k", "v")
    assert path.read_bytes() == b"{half a file"


def test_atomic_write_bytes_replaces_and_cleans_dead_writers_temps(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_bytes(target, b"a: 1\n", mode=0o600)
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"a: 2\n")
    assert target.read_bytes() == b"a: 2\n"
    assert target.stat().st_mode & 0o777 == 0o640  # permissions of the replaced file kept
    # a temp of a dead writer (pid of an exited process) and one of a live writer (us)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".config.yaml.tmp.{dead}.abcd"
    live = tmp_path / f".config.yaml.tmp.{os.getpid()}.abcd"
    stale.write_bytes(b"x")
    live.write_bytes(b"y")
    assert clean_stale_temps(target) == [stale]
    assert live.exists() and not stale.exists()


def test_lock_prevents_interleaving_of_two_writer_processes(tmp_path):
    path = tmp_path / "mem.json"
    procs = [subprocess.Popen([sys.executable, str(WRITER), "append", str(path), p, "50"],
                              env=_env()) for p in ("node", "cli")]
    for p in procs:
        assert p.wait(timeout=120) == 0
    facts = MemoryStore(path).load()
    keys = {f.key for f in facts}
    assert len(facts) == 100
    assert keys == {f"node{i}" for i in range(50)} | {f"cli{i}" for i in range(50)}
    # each writer's own facts stay in its write order
    for prefix in ("node", "cli"):
        own = [int(f.key[len(prefix):]) for f in facts if f.key.startswith(prefix)]
        assert own == list(range(50))


def test_lock_timeout_is_a_clear_error(tmp_path):
    path = tmp_path / "mem.json"
    holder = subprocess.Popen([sys.executable, str(WRITER), "hold", str(path), "5"],
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(MemoryEditError, match="locked by another process"):
            MemoryStore(path, lock_timeout=0.3).add("k", "v")
        assert time.monotonic() - t0 < 3
    finally:
        holder.kill()
        holder.wait()
    MemoryStore(path, lock_timeout=2).add("k", "v")  # lock released when the holder died


def test_unreadable_path_raises_even_with_recover_and_is_not_moved(tmp_path):
    path = tmp_path / "mem.json"
    path.mkdir()  # a directory where the file should be: cannot be read as a store
    with pytest.raises(StoreCorruptError, match="cannot read memory store"):
        MemoryStore(path, recover=True).load()
    with pytest.raises(StoreCorruptError, match="cannot read memory store"):
        MemoryStore(path, recover=True).add("k", "v")
    assert path.is_dir() and not list(tmp_path.glob("*.corrupt-*"))


def test_lock_is_reentrant_within_a_thread(tmp_path):
    store = MemoryStore(tmp_path / "mem.json", lock_timeout=0.5)
    with store.locked():
        store.add("a", "1")          # would time out if the lock were not re-entrant
        store.replace("a", "2")
    assert [f.text for f in store.load()] == ["2"]


def test_threads_sharing_one_store_do_not_lose_edits(tmp_path):
    import threading

    store = MemoryStore(tmp_path / "mem.json")

    def writer(t: int) -> None:
        for i in range(25):
            store.add(f"t{t}_{i}", f"fact {i} of thread {t}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(MemoryStore(tmp_path / "mem.json").load()) == 100
