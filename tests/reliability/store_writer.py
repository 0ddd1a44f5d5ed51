"""Helper process for the store tests: real, separate writers of one MemoryStore.

    python store_writer.py append PATH PREFIX N   # N locked read-modify-write appends
    python store_writer.py hold PATH SECONDS      # hold the store lock, print "locked"

Run with the repo root on PYTHONPATH.
"""

from __future__ import annotations

import sys
import time

from bitgen_core.store import MemoryStore


def main(argv: list[str]) -> int:
    mode, path = argv[0], argv[1]
    store = MemoryStore(path, lock_timeout=30.0)
    if mode == "append":
        prefix, n = argv[2], int(argv[3])
        for i in range(n):
            store.add(f"{prefix}{i}", f"fact {i} written by {prefix}")
        return 0
    if mode == "hold":
        with store.locked():
            print("locked", flush=True)
            time.sleep(float(argv[2]))
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
