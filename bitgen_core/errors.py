"""BitGen's error types (torch-free, ROS-free).

Every error BitGen raises on purpose is a `BitGenError`, so a caller (the ROS node, the CLI)
can turn it into a service response or a one-line message with a non-zero exit, while any
other exception stays a bug with a traceback. Messages are one line: what is wrong, then what
to do about it.
"""

from __future__ import annotations


class BitGenError(Exception):
    """Base of every deliberate BitGen failure; `str(err)` is a one-line user message."""


class ModelLoadError(BitGenError):
    """The model directory is missing, incomplete, tampered with or of an unknown format."""


class InputError(BitGenError, ValueError):
    """A task, fact, key, image or config value is malformed or past a configured limit."""


class MemoryEditError(BitGenError):
    """A memory edit could not be applied (unknown key, store full, store busy...)."""


class AuthError(BitGenError):
    """A memory edit was refused by the edit guard.

    `reason` is a stable machine-readable code for logs and audit records: one of
    "read_only", "no_token_configured", "token_missing", "token_wrong", "rate_limited",
    "token_config" (the token source itself is unusable). `retry_after` is set (seconds)
    for "rate_limited".
    """

    def __init__(self, message: str, *, reason: str = "refused",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class StoreCorruptError(BitGenError):
    """A persisted store file cannot be trusted (unparseable, checksum or version mismatch)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
