"""Rows of the token embedding / output head, read from the file on demand (torch-free).

The table is 30k x d float32 (15.6 MB at d=128), and a selection needs few rows: the prompt's
tokens, each trace token, and the 16 shortlisted rows the output head re-scores exactly.
Memory-mapping the file looked free, but every touched row faults in 64 kB around it (the
kernel's fault-around; MADV_RANDOM does not stop it): 17 rows made 1.1 MB resident, 1,700
rows the whole file, so a long-running process grew by 15 MB and a stream's RSS swung with
it. Here a row is read with `os.pread` (the page cache serves it; nothing maps into this
process) and kept in a bounded dict, which the trace vocabulary's few hundred recurring
tokens hit almost always. The bytes are the file's, so the rows are exact float32.

    rows = TableRows(path, shape=(V, d), offset=header_bytes)
    rows[17]            -> (d,)         rows[[3, 5]] -> (2, d)        rows[ids_2d] -> (B, T, d)
"""
from __future__ import annotations

import os
import threading

import numpy as np

DEFAULT_CAPACITY = 4096   # rows kept (2 MB at d=128); the whole cache is dropped when full


class TableRows:
    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], offset: int,
                 capacity: int = DEFAULT_CAPACITY):
        self.path, self.shape, self.offset = str(path), (int(shape[0]), int(shape[1])), int(offset)
        self.dtype = np.dtype(np.float32)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._capacity = int(capacity)
        self._rows: dict[int, np.ndarray] = {}
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._closed = threading.Event()

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def cached_rows(self) -> int:
        return len(self._rows)

    def row(self, i: int) -> np.ndarray:
        """Row i (d,), read-only."""
        r = self._rows.get(i)
        if r is None:
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {i} is outside the table's {self.shape[0]} rows")
            data = os.pread(self._fd, self._row_bytes, self.offset + i * self._row_bytes)
            if len(data) != self._row_bytes:
                raise OSError(f"{self.path}: short read at row {i} (file changed on disk?)")
            r = np.frombuffer(data, self.dtype)
            if len(self._rows) >= self._capacity:
                self._rows = {}     # rebinding, not clear(): a reader on another thread keeps its dict
            self._rows[i] = r
        return r

    def __getitem__(self, ids) -> np.ndarray:
        if isinstance(ids, (int, np.integer)):
            return self.row(int(ids))
        idx = np.asarray(ids, dtype=np.int64)
        get, rows = self._rows.get, []
        for i in idx.reshape(-1).tolist():     # the hot path: 16 re-scored rows per trace token
            r = get(i)
            rows.append(r if r is not None else self.row(i))
        # one concatenate of the 1-D rows, then a view: np.stack costs 3x as much (8.9 vs 3.0 us
        # for the 16 re-scored rows of each free trace token)
        out = np.concatenate(rows) if rows else np.zeros((0,), self.dtype)
        return out.reshape(idx.shape + (self.shape[1],))

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            os.close(self._fd)

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError):
            pass
