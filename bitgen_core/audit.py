"""Append-only audit log of every memory change and refusal (torch-free).

One JSON object per line:
    {"time": "2026-01-02T03:04:05.678Z", "action": "write", "key": "drone_grounded",
     "outcome": "ok", "reason": "", "fact_sha256": "<hex of the fact text>",
     "source": "ros:/bitgen/memory_edit", "pid": 1234}
The fact is identified by its sha256 — enough to prove which text was stored (hash the
text you suspect) without copying operator text around. The log never takes a token
argument: nothing that could be a secret has a field to go into.

Durability and concurrency: each record is one `write` to a file opened O_APPEND, then
fsync'd; the node and the CLI serialise on an `fcntl.flock` of `.<name>.lock`, which also
covers size-based rotation (`audit.log` → `audit.log.1` → ... → `audit.log.N`, the oldest
dropped). `read_audit` yields the records of all files oldest first.

Reader:  python -m bitgen_core.audit PATH [--key K] [--action A] [--since ISO] [--tail N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from bitgen_core.errors import InputError
from bitgen_core.store import fsync_dir

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "refused", "error")
_ACTION_RE = re.compile(r"[a-z][a-z_]{0,31}")
_MAX_FIELD = 400  # characters kept of free-text fields (keys and reasons come from callers)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _MAX_FIELD else text[:_MAX_FIELD] + "..."


class AuditLog:
    """Appends audit records to `path`, rotating at `max_bytes` and keeping `backups` files."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 1_000_000,
                 backups: int = 5, source: str = "") -> None:
        if max_bytes < 1024 or backups < 1:
            raise InputError("audit log needs max_bytes >= 1024 and backups >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.source = source
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, max_bytes={self.max_bytes}, backups={self.backups})"

    @contextlib.contextmanager
    def _locked(self, kind: int = fcntl.LOCK_EX) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, kind)
            yield
        finally:
            os.close(fd)

    def record(self, action: str, key: str, outcome: str, reason: str = "", *,
               text: str | None = None, fact_sha256: str | None = None,
               source: str | None = None) -> dict:
        """Append one record and return it. `text` (the fact) is hashed, never stored."""
        if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
            raise InputError(f"audit action must be a short lowercase word, got {action!r}")
        if outcome not in OUTCOMES:
            raise InputError(f"audit outcome must be one of {', '.join(OUTCOMES)}")
        if text is not None:
            fact_sha256 = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        rec = {"time": _now_iso(), "action": action, "key": _clip(key), "outcome": outcome,
               "reason": _clip(reason), "fact_sha256": fact_sha256,
               "source": _clip(self.source if source is None else source), "pid": os.getpid()}
        line = (json.dumps(rec, ensure_ascii=True) + "\n").encode("ascii")
        with self._locked():
            self._rotate_if_needed(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)  # one write of one line: records never interleave
                os.fsync(fd)
            finally:
                os.close(fd)
        return rec

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        fsync_dir(self.path.parent)


def audit_files(path: str | os.PathLike) -> list[Path]:
    """The log's files, oldest first: PATH.N ... PATH.1, PATH (those that exist)."""
    path = Path(path)
    numbered = []
    for p in path.parent.glob(f"{path.name}.*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), p))
    files = [p for _, p in sorted(numbered, reverse=True)]
    return files + ([path] if path.exists() else [])


def read_audit(path: str | os.PathLike, *, key: str | None = None, action: str | None = None,
               since: str | None = None) -> Iterator[dict]:
    """Yield the audit records of `path` and its rotated files, oldest first.

    Filters: exact `key`, exact `action`, and `since` (ISO time; records at or after it).
    A line that is not a JSON record (e.g. torn by a power cut) is skipped with a warning.
    """
    path = Path(path)
    since_dt = _parse_time(since) if since else None
    lock = path.parent / f".{path.name}.lock"
    handles = []
    # open every file under the lock: an open handle keeps its content even if a writer
    # rotates the names afterwards, so the snapshot is consistent and in order
    with contextlib.ExitStack() as stack:
        if lock.exists():
            fd = os.open(lock, os.O_RDONLY)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_SH)
        for p in audit_files(path):
            with contextlib.suppress(FileNotFoundError):
                handles.append((p, open(p, "rb")))
    for p, f in handles:
        with f:
            for n, raw in enumerate(f, 1):
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict) or "action" not in rec:
                        raise ValueError
                except ValueError:
                    log.warning("skipping unreadable audit line %s:%d", p, n)
                    continue
                if key is not None and rec.get("key") != key:
                    continue
                if action is not None and rec.get("action") != action:
                    continue
                if since_dt is not None:
                    try:
                        if _parse_time(rec.get("time", "")) < since_dt:
                            continue
                    except InputError:
                        continue
                yield rec


def _parse_time(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise InputError(f"not an ISO time: {text!r} (e.g. 2026-01-02T03:04:05Z)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _printable(value: object) -> str:
    """Untrusted text (keys of refused edits are not validated) made safe for a terminal:
    escape sequences and other non-printables are shown escaped, not interpreted."""
    text = "" if value is None else str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def format_record(rec: dict) -> str:
    digest = _printable(rec.get("fact_sha256") or "")[:12] or "-"
    reason = f"  ({_printable(rec['reason'])})" if rec.get("reason") else ""
    return (f"{_printable(rec.get('time', '?'))}  {_printable(rec.get('action', '?')):<8} "
            f"{_printable(rec.get('outcome', '?')):<8} {_printable(rec.get('key')):<24} "
            f"{digest}{reason}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitgen_core.audit",
                                 description="Print a BitGen memory audit log, oldest first.")
    ap.add_argument("path", help="audit log file (its rotated .1 .2 ... files are read too)")
    ap.add_argument("--key", help="only records for this memory key")
    ap.add_argument("--action", help="only this action (write, forget, refused, ...)")
    ap.add_argument("--since", help="only records at or after this ISO time")
    ap.add_argument("--tail", type=int, help="only the last N matching records")
    ap.add_argument("--json", action="store_true", help="print JSON lines")
    args = ap.parse_args(argv)
    if not audit_files(args.path):
        print(f"error: no audit log at {args.path}", file=sys.stderr)
        return 1
    try:
        records = read_audit(args.path, key=args.key, action=args.action, since=args.since)
        if args.tail is not None:
            records = deque(records, maxlen=max(args.tail, 0))
        for rec in records:
            print(json.dumps(rec) if args.json else format_record(rec))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` closed the pipe: not an error
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
