"""Who may change the episodic memory (torch-free).

The PyPI build of Fast DDS has no DDS Security, so anyone on the ROS domain can call
`/bitgen/memory_edit`. A shared edit token is the guard that works everywhere:

- The token comes from the environment (`BITGEN_EDIT_TOKEN`) or a file
  (`BITGEN_EDIT_TOKEN_FILE`, or a path given explicitly) that only its owner can read —
  never from a ROS parameter or a command-line value, which end up in `ros2 param dump`,
  launch logs and shell history. The secret lives only inside `EditToken`; its repr names
  the source, never the value, and it refuses to be pickled.
- Comparison is constant-time (`hmac.compare_digest`) so response timing does not leak how
  many leading characters of a guess were right.
- `EditGuard` checks, in order: read-only switch, token, rate limit. The token is checked
  before the rate limit so that unauthenticated callers cannot use up the operators' budget.
- With no token configured, edits are refused unless `allow_unauthenticated=True` is set
  explicitly (default False: closed by default, for a trusted single-host setup only).
"""

from __future__ import annotations

import hmac
import os
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from bitgen_core.errors import AuthError

TOKEN_ENV = "BITGEN_EDIT_TOKEN"
TOKEN_FILE_ENV = "BITGEN_EDIT_TOKEN_FILE"
MIN_TOKEN_CHARS = 12
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def _config_error(message: str) -> AuthError:
    return AuthError(message, reason="token_config")


class EditToken:
    """The configured edit secret. Build it with `EditToken.from_env` / `from_file` /
    `load_edit_token`; it only answers `matches(supplied)`."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: bytes, source: str) -> None:
        secret = secret.strip()
        if not secret:
            raise _config_error(f"edit token from {source} is empty; put a random token there "
                                f"(e.g. {_MAKE_ONE})")
        if len(secret) < MIN_TOKEN_CHARS:
            raise _config_error(f"edit token from {source} is too short ({len(secret)} chars, "
                                f"minimum {MIN_TOKEN_CHARS}); generate one with {_MAKE_ONE}")
        self._secret = secret
        self.source = source

    def __repr__(self) -> str:
        return f"EditToken(source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("EditToken cannot be pickled (it would write the secret out)")

    def matches(self, supplied: str | bytes | None) -> bool:
        if not isinstance(supplied, (str, bytes)):
            return False
        if isinstance(supplied, str):
            supplied = supplied.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(self._secret, supplied.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 name: str = TOKEN_ENV) -> "EditToken | None":
        environ = os.environ if environ is None else environ
        value = environ.get(name)
        if value is None:
            return None
        return cls(value.encode("utf-8", "surrogatepass"), f"env:{name}")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "EditToken":
        """Read the token from a file that must not be accessible to group or others."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise _config_error(f"cannot open edit token file {path}: {e.strerror}; check the "
                                f"path in {TOKEN_FILE_ENV}") from None
        try:
            st = os.fstat(fd)  # the file we read, not whatever the path names by now
            if not stat.S_ISREG(st.st_mode):
                raise _config_error(f"edit token file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise _config_error(
                    f"edit token file {path} is accessible by group/others (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
            if st.st_size > 4096:
                raise _config_error(f"edit token file {path} is {st.st_size} bytes; it should "
                                    "hold just the token")
            secret = os.read(fd, 4097)
        finally:
            os.close(fd)
        return cls(secret, f"file:{path}")


def load_edit_token(token_file: str | os.PathLike | None = None,
                    environ: Mapping[str, str] | None = None) -> EditToken | None:
    """The configured token, or None if none is configured.

    Precedence: an explicit `token_file`; else `BITGEN_EDIT_TOKEN_FILE`; else
    `BITGEN_EDIT_TOKEN`. Setting both environment variables is refused as ambiguous.
    """
    environ = os.environ if environ is None else environ
    if token_file is not None:
        return EditToken.from_file(token_file)
    file_env = environ.get(TOKEN_FILE_ENV)
    if file_env is not None and environ.get(TOKEN_ENV) is not None:
        raise _config_error(f"both {TOKEN_ENV} and {TOKEN_FILE_ENV} are set; unset one of them")
    if file_env is not None:
        return EditToken.from_file(file_env)
    return EditToken.from_env(environ)


class EditGuard:
    """Decides whether a memory edit may proceed; raises AuthError with a clear message.

    `edits_per_minute` (None = unlimited) and `burst` set a token bucket: up to `burst`
    edits at once, refilled at `edits_per_minute / 60` per second. `clock` is injectable for
    tests. `read_only` may be flipped at run time (a live ROS parameter). Thread-safe.
    """

    def __init__(self, token: EditToken | None, *, read_only: bool = False,
                 allow_unauthenticated: bool = False,
                 edits_per_minute: float | None = 30.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if edits_per_minute is not None and edits_per_minute <= 0:
            raise ValueError("edits_per_minute must be positive, or None for no limit")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.token = token
        self.read_only = read_only
        self.allow_unauthenticated = allow_unauthenticated
        self.edits_per_minute = edits_per_minute
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._bucket = float(burst)
        self._last = clock()

    def __repr__(self) -> str:
        return (f"EditGuard(token={self.token!r}, read_only={self.read_only}, "
                f"allow_unauthenticated={self.allow_unauthenticated}, "
                f"edits_per_minute={self.edits_per_minute}, burst={self.burst})")

    @classmethod
    def from_environment(cls, token_file: str | os.PathLike | None = None,
                         environ: Mapping[str, str] | None = None, **kwargs) -> "EditGuard":
        return cls(load_edit_token(token_file, environ), **kwargs)

    def check(self, supplied_token: str | bytes | None) -> None:
        """Pass silently, or raise AuthError (`.reason` says which rule refused)."""
        if self.read_only:
            raise AuthError("memory is read-only; edits are disabled on this node "
                            "(read_only parameter)", reason="read_only")
        if self.token is None:
            if not self.allow_unauthenticated:
                raise AuthError(f"edits refused: no edit token configured; set {TOKEN_ENV} or "
                                f"{TOKEN_FILE_ENV} where the node runs",
                                reason="no_token_configured")
        elif not (isinstance(supplied_token, (str, bytes)) and supplied_token.strip()):
            raise AuthError("edit token missing; pass the operator's edit token with the "
                            "request", reason="token_missing")
        elif not self.token.matches(supplied_token):
            raise AuthError("edit token wrong; check the token configured on the node",
                            reason="token_wrong")
        self._take_rate_slot()

    def allowed(self, supplied_token: str | bytes | None) -> tuple[bool, str]:
        """`check` as (ok, message) for service responses; message is "" when ok."""
        try:
            self.check(supplied_token)
        except AuthError as e:
            return False, str(e)
        return True, ""

    def _take_rate_slot(self) -> None:
        if self.edits_per_minute is None:
            return
        rate = self.edits_per_minute / 60.0
        with self._lock:
            now = self._clock()
            self._bucket = min(float(self.burst), self._bucket + (now - self._last) * rate)
            self._last = now
            if self._bucket >= 1.0:
                self._bucket -= 1.0
                return
            wait = (1.0 - self._bucket) / rate
        raise AuthError(f"rate limit: {self.edits_per_minute:g} edits/min exceeded, retry in "
                        f"{wait:.1f} s", reason="rate_limited", retry_after=wait)
