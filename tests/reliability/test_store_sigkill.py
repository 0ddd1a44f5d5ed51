"""Kill a process that is rewriting the memory store with SIGKILL, over and over.

Each round forks a writer that reopens the store and keeps saving the next generation (a
deterministic, growing fact list) and reports every completed save on a pipe. The parent
kills it after a random delay. After every kill the store must load, and hold exactly the
generation the writer last reported complete or the one it was writing (old or new) — never
a corrupt or mixed state. Temp files of killed writers must not pile up: at most the one
in-flight temp exists after a kill, and the next open removes it.
"""

from __future__ import annotations

import os
import random
import select
import signal
import time

from bitgen_core.store import Fact, MemoryStore

KILLS = 120
BUDGET_S = 50.0


def expected_facts(generation: int) -> list[tuple[str, str]]:
    """Facts of a generation: their number and content grow with it (wrapping at 160)."""
    n = 1 + generation % 160
    return [(f"k{i}", f"generation {generation} fact {i} " + "x" * (i % 40)) for i in range(n)]


def writer(path: str, out_fd: int) -> None:
    store = MemoryStore(path)
    store.load()
    while True:
        g = store.generation + 1
        store.save([Fact.new(k, t, written_at=float(g)) for k, t in expected_facts(g)])
        os.write(out_fd, f"{store.generation}\n".encode())


def read_reports(fd: int) -> list[int]:
    """Every generation number the (now dead) writer reported complete."""
    data = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return [int(line) for line in data.split(b"\n") if line.strip()]


def temps(directory) -> list[str]:
    return [n for n in os.listdir(directory) if ".tmp." in n]


def test_store_survives_sigkill_at_random_points(tmp_path):
    path = tmp_path / "mem.json"
    rng = random.Random(1234)
    last_done = 0            # generation the last writer reported complete
    saw_new = saw_old = 0    # how often the kill landed after / before the in-flight rename
    mid_write = 0            # how often it landed while the temp file was being written
    t0 = time.monotonic()
    kills = 0
    while kills < KILLS:
        assert time.monotonic() - t0 < BUDGET_S, f"only {kills} kills in {BUDGET_S} s"
        MemoryStore(path)   # opening cleans the temps of dead writers
        assert temps(tmp_path) == []

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: write until killed; never return into pytest
            try:
                os.close(r)
                writer(str(path), w)
            finally:
                os._exit(1)
        os.close(w)
        # wait for the writer's first completed save, so every kill lands inside its
        # write loop (not in its start-up), then kill at a random point of a later save
        ready = select.select([r], [], [], 10.0)[0]
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert ready, "writer did not complete a save within 10 s"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        reports = read_reports(r)
        os.close(r)
        kills += 1

        litter = len(temps(tmp_path))
        assert litter <= 1
        mid_write += litter
        assert not list(tmp_path.glob("*.corrupt-*"))
        facts = MemoryStore(path).load()       # strict: raises if corrupt
        if reports:
            last_done = reports[-1]
        g = int(facts[0].written_at) if facts else 0
        assert g in (last_done, last_done + 1), (g, last_done)
        assert [(f.key, f.text) for f in facts] == (expected_facts(g) if g else [])
        saw_new += g == last_done + 1
        saw_old += g == last_done
        last_done = g

    assert kills >= 100
    assert last_done > kills  # every writer completed at least one save before its kill
    # both outcomes occurred, so kills really landed at different points of a save
    assert saw_old > 0 and saw_new > 0 and mid_write > 0, (saw_old, saw_new, mid_write)
