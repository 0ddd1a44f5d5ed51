"""Crash-safe, versioned, checksummed file store for the episodic memory facts (torch-free).

Operators' facts ("the drone is grounded") change where robots are sent, so losing or
half-writing them is not acceptable. The guarantees, and how each is obtained:

- A reader sees the old file or the new one, never a mix: every write goes to a temp file in
  the same directory, is flushed and fsync'd, then `os.replace`d over the target (atomic on
  POSIX), and the directory is fsync'd so the rename itself survives a power cut.
- Damage is detected, not trusted: the file carries a format version and the sha256 of its
  canonical payload, and every fact carries the sha256 of its text.
- Nothing is silently discarded: a bad file raises `StoreCorruptError`, or with
  `recover=True` is renamed to `<name>.corrupt-<UTC time>` and the store starts empty.
- Two processes (the node and the `bitgen memory` CLI) cannot interleave read-modify-write
  cycles: every mutation holds an exclusive `fcntl.flock` on `.<name>.lock` beside the file.
  The lock file is never deleted (deleting it would let two writers lock different inodes).
- Temp files left by a writer killed mid-write are removed on the next open or write; they
  are recognised by name and by their writer's pid no longer existing.

On disk (UTF-8 JSON):
    {"format": "bitgen-memory-store", "version": 1, "checksum": "sha256:<hex>",
     "payload": {"generation": 7, "facts": [{"key", "text", "written_at", "sha256"}, ...]}}
`checksum` is the sha256 of the payload serialised canonically (sorted keys, no spaces,
ASCII escapes); `generation` counts completed saves, so a long-running process can tell
that another process changed the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bitgen_core.errors import InputError, MemoryEditError, StoreCorruptError

log = logging.getLogger(__name__)

STORE_FORMAT = "bitgen-memory-store"
STORE_VERSION = 1
MAX_STORE_BYTES = 64 * 1024 * 1024  # far above 256 facts x 300 chars; refuses absurd files
_TMP_MARK = ".tmp."


def text_sha256(text: str) -> str:
    """Hex sha256 of a fact's UTF-8 text (the identity used by the store and the audit log)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Fact:
    """One episodic-memory fact as persisted: `written_at` is a Unix time in seconds."""

    key: str
    text: str
    written_at: float
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not isinstance(self.text, str):
            raise InputError("fact key and text must be strings")
        try:
            self.key.encode("utf-8")
            digest = text_sha256(self.text)
        except UnicodeEncodeError:
            raise InputError(f"fact {self.key!r} contains invalid unicode (lone surrogate); "
                             "re-type the text") from None
        if not self.sha256:
            object.__setattr__(self, "sha256", digest)
        elif self.sha256 != digest:
            raise StoreCorruptError(f"fact {self.key!r}: text does not match its sha256")

    @classmethod
    def new(cls, key: str, text: str, written_at: float | None = None) -> "Fact":
        return cls(key=key, text=text, written_at=time.time() if written_at is None
                   else float(written_at))

    def to_json(self) -> dict:
        return {"key": self.key, "text": self.text, "written_at": self.written_at,
                "sha256": self.sha256}


# --- atomic file writes, reusable for checkpoints and configs --------------------------------

def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename/creation in `directory` durable (a file's fsync does not cover it)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}{_TMP_MARK}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers and crashes see either old or new content.

    temp file in the same directory (same filesystem, so the rename is atomic) → write all →
    fsync → os.replace → fsync the directory. On any failure the temp file is removed and the
    old content is untouched. A replaced file keeps its permission bits; `mode` applies to a
    newly created one (umask still applies).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f"{_temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.fchmod(fd, os.stat(path).st_mode & 0o7777)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temp files that `atomic_write_bytes(path, ...)` left behind when its writer
    died (pid gone). Returns the removed paths. Temps of live writers are left alone."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    prefix = _temp_prefix(path)
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_part = name[len(prefix):].split(".", 1)[0]
        if not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
            removed.append(directory / name)
    return removed


# --- the store ----------------------------------------------------------------------------

def _canonical(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


class _UnreadableStore(StoreCorruptError):
    """The file could not even be read (permissions, I/O): never moved aside."""


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class MemoryStore:
    """The persisted list of episodic-memory facts, in write order, keys unique.

    `recover=False` (default): a corrupt file raises `StoreCorruptError` on load.
    `recover=True` (what a long-running node wants at start-up): it is moved aside to
    `<name>.corrupt-<UTC time>`, the store starts empty, and `last_recovery` holds the
    one-line message (also logged as a warning). A file of another format version counts as
    unreadable too: it is kept aside byte for byte for the bitgen version that wrote it.
    An unreadable path (permissions, I/O error) always raises: moving it would not help.
    `max_facts` (optional) is enforced inside the lock, so concurrent writers cannot overshoot.
    """

    def __init__(self, path: str | os.PathLike, *, recover: bool = False,
                 max_facts: int | None = None, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.recover = recover
        self.max_facts = max_facts
        self.lock_timeout = lock_timeout
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self.generation = 0
        self.last_recovery: str | None = None
        self._held = threading.local()  # this thread's lock depth (flock is per descriptor)
        if not self.path.parent.is_dir():
            raise InputError(f"memory store directory {self.path.parent} does not exist; "
                             "create it or choose another --memory path")
        clean_stale_temps(self.path)

    def __repr__(self) -> str:
        return f"MemoryStore({str(self.path)!r}, generation={self.generation})"

    # -- locking --
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive inter-process lock (blocks up to `lock_timeout` s).
        Re-entrant within a thread, so `with store.locked(): store.add(...)` works."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise MemoryEditError(
                            f"memory store {self.path} is locked by another process for more "
                            f"than {self.lock_timeout:g} s; check for a hung bitgen process"
                        ) from None
                    time.sleep(0.005)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    # -- reading --
    def load(self) -> list[Fact]:
        """Read and verify the facts. A missing file is an empty store."""
        try:
            return self._read()
        except StoreCorruptError as err:
            if not self.recover or isinstance(err, _UnreadableStore):
                raise
            with self.locked():
                try:  # another process may have repaired or replaced it meanwhile
                    return self._read()
                except _UnreadableStore:
                    raise
                except StoreCorruptError as err_again:
                    err = err_again
                return self._move_aside(err)

    def _read(self) -> list[Fact]:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_STORE_BYTES:
                    raise self._corrupt(f"larger than {MAX_STORE_BYTES >> 20} MB")
                raw = f.read()
        except FileNotFoundError:
            self.generation = 0
            return []
        except OSError as e:
            raise _UnreadableStore(f"cannot read memory store {self.path}: {e.strerror}; "
                                   "check the path and its permissions",
                                   path=str(self.path)) from None
        facts, generation = self._parse(raw)
        self.generation = generation
        return facts

    def _corrupt(self, what: str) -> StoreCorruptError:
        return StoreCorruptError(
            f"memory store {self.path} is corrupt ({what}); restore it from a backup, or start "
            "with recover enabled to move it aside and begin empty", path=str(self.path))

    def _parse(self, raw: bytes) -> tuple[list[Fact], int]:
        if not raw:
            raise self._corrupt("empty file")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise self._corrupt("not valid JSON, probably truncated or overwritten") from None
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            raise self._corrupt(f"not a {STORE_FORMAT} file")
        version = doc.get("version")
        if version != STORE_VERSION:
            raise StoreCorruptError(
                f"memory store {self.path} has format version {version!r}, this bitgen reads "
                f"version {STORE_VERSION}; use a matching bitgen version or another memory "
                "file", path=str(self.path))
        payload = doc.get("payload")
        if not isinstance(payload, dict):
            raise self._corrupt("payload missing")
        try:
            checksum = "sha256:" + hashlib.sha256(_canonical(payload)).hexdigest()
        except (ValueError, RecursionError):  # NaN/Infinity or absurd nesting
            raise self._corrupt("payload holds values JSON cannot represent") from None
        if doc.get("checksum") != checksum:
            raise self._corrupt("checksum mismatch")
        generation, items = payload.get("generation"), payload.get("facts")
        if not isinstance(generation, int) or not isinstance(items, list):
            raise self._corrupt("payload fields missing")
        facts, seen = [], set()
        for item in items:
            try:
                fact = Fact(key=item["key"], text=item["text"],
                            written_at=float(item["written_at"]), sha256=item["sha256"])
            except (KeyError, TypeError, ValueError, InputError, StoreCorruptError):
                raise self._corrupt("a fact record is malformed") from None
            if fact.key in seen:
                raise self._corrupt(f"duplicate key {fact.key!r}")
            seen.add(fact.key)
            facts.append(fact)
        return facts, generation

    def _move_aside(self, err: StoreCorruptError) -> list[Fact]:
        base = self.path.with_name(f"{self.path.name}.corrupt-{_utc_stamp()}")
        target, n = base, 1
        while target.exists():
            target, n = base.with_name(f"{base.name}-{n}"), n + 1
        try:
            os.rename(self.path, target)
        except FileNotFoundError:  # vanished between read and rename: nothing to keep
            target = None
        except OSError as e:
            raise StoreCorruptError(f"{err} (moving it aside to {target} failed: {e.strerror})",
                                    path=str(self.path)) from None
        fsync_dir(self.path.parent)
        self.generation = 0
        self.last_recovery = (f"{err}; moved it aside to {target.name} and started with an "
                              "empty memory" if target else f"{err}; it disappeared, "
                              "started with an empty memory")
        log.warning("%s", self.last_recovery)
        return []

    # -- writing --
    def save(self, facts: list[Fact]) -> None:
        """Atomically replace the stored facts (under the lock). A corrupt file being
        replaced is moved aside first, never overwritten."""
        with self.locked():
            try:
                self._read()
            except _UnreadableStore:
                raise
            except StoreCorruptError as err:
                self._move_aside(err)
            self._write(list(facts))

    def modify(self, change: Callable[[list[Fact]], list[Fact]]) -> list[Fact]:
        """Atomic read-modify-write: `change(current facts) -> new facts`, under the lock.
        Exceptions raised by `change` abort the edit and leave the file untouched."""
        with self.locked():
            try:
                current = self._read()
            except StoreCorruptError as err:
                if not self.recover or isinstance(err, _UnreadableStore):
                    raise
                current = self._move_aside(err)
            new = change(list(current))
            self._write(new)
            return new

    def _write(self, facts: list[Fact]) -> None:
        """Write `facts` as the next generation; the caller holds the lock and has just
        read the file, so `self.generation` is current."""
        keys = [f.key for f in facts]
        if len(set(keys)) != len(keys):
            raise InputError("facts to save contain duplicate keys; keys must be unique")
        if self.max_facts is not None and len(facts) > self.max_facts:
            raise MemoryEditError(f"memory is full ({len(facts)} facts > limit "
                                  f"{self.max_facts}); forget a fact first")
        for f in facts:
            if not isinstance(f, Fact) or not math.isfinite(f.written_at):
                raise InputError("facts to save must be Fact objects with a finite written_at")
        generation = self.generation + 1
        payload = {"generation": generation, "facts": [f.to_json() for f in facts]}
        doc = {"format": STORE_FORMAT, "version": STORE_VERSION,
               "checksum": "sha256:" + hashlib.sha256(_canonical(payload)).hexdigest(),
               "payload": payload}
        data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
        clean_stale_temps(self.path)
        atomic_write_bytes(self.path, data)
        self.generation = generation

    def add(self, key: str, text: str, *, replace: bool = False) -> Fact:
        """Add a fact (at the end: facts are kept in write order). An existing key raises
        MemoryEditError unless `replace=True`, which moves it to the end with the new text."""
        fact = Fact.new(key, text)

        def change(facts: list[Fact]) -> list[Fact]:
            if any(f.key == key for f in facts):
                if not replace:
                    raise MemoryEditError(f"a fact with key {key!r} exists; forget it first "
                                          "or replace it")
                facts = [f for f in facts if f.key != key]
            return facts + [fact]

        self.modify(change)
        return fact

    def replace(self, key: str, text: str) -> Fact:
        """Add the fact, or replace the one with the same key."""
        return self.add(key, text, replace=True)

    def remove(self, key: str) -> Fact:
        """Remove and return the fact with this key; MemoryEditError if there is none."""
        removed: list[Fact] = []

        def change(facts: list[Fact]) -> list[Fact]:
            removed.extend(f for f in facts if f.key == key)
            if not removed:
                raise MemoryEditError(f"no fact with key {key!r}; list the facts to see the "
                                      "keys in use")
            return [f for f in facts if f.key != key]

        self.modify(change)
        return removed[0]
