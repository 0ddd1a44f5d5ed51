"""Input limits and validation of everything text-shaped that reaches BitGen (torch-free).

Tasks arrive on a ROS topic anyone on the domain can publish to, and facts change where
robots are sent, so every boundary takes any `str` (or worse) and returns either a clean
string or an `InputError` with a one-line message — nothing else. The limits are data:
defaults below, overridable from YAML (`config/limits.yaml` ships the defaults, or a
`limits:` section of a node/CLI config via `Limits.from_dict`).

Text is accepted when it is valid Unicode without control characters (NUL, escape
sequences, lone surrogates from broken decoders); it is NFC-normalised (so visually equal
strings tokenise equally) and whitespace runs collapse to one space.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml

from bitgen_core.errors import InputError

DEFAULT_LIMITS_FILE = Path(__file__).resolve().parent.parent / "config" / "limits.yaml"


@dataclass(frozen=True)
class Limits:
    max_task_chars: int = 1000
    max_fact_chars: int = 300
    max_key_chars: int = 64
    # keys are identifiers: ASCII letter/digit first, then letters, digits, _ . : -
    key_pattern: str = r"[A-Za-z0-9][A-Za-z0-9_.:\-]*"
    max_facts: int = 256
    max_image_pixels: int = 4096 * 4096
    max_image_bytes: int = 64 * 1024 * 1024      # raw sensor_msgs/Image buffer
    max_compressed_bytes: int = 16 * 1024 * 1024  # sensor_msgs/CompressedImage payload

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)
                                    or value < 1):
                raise InputError(f"limit {f.name} must be a positive integer, got {value!r}")
        try:
            re.compile(self.key_pattern)
        except (re.error, TypeError) as e:
            raise InputError(f"limit key_pattern is not a valid regular expression: {e}")

    @classmethod
    def from_dict(cls, values: dict | None) -> "Limits":
        """Defaults overridden by `values`; unknown names are refused (typos must not pass)."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown limit(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Limits":
        """Load from a YAML mapping, either flat or under a top-level `limits:` key."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read limits file {path}: {e}".replace("\n", " "))
        if isinstance(data, dict) and set(data) == {"limits"}:
            data = data["limits"]
        if data is not None and not isinstance(data, dict):
            raise InputError(f"limits file {path} must hold a mapping of limit names to values")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT_LIMITS = Limits()


def _preview(text: str, n: int = 32) -> str:
    """A short, single-line, escape-safe rendering of untrusted text for messages."""
    shown = ascii(text[:n])
    return shown + ("..." if len(text) > n else "")


def _check_text(text: object, what: str, max_chars: int) -> str:
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, got {type(text).__name__}")
    if len(text) > 4 * max_chars + 1024:  # refuse huge inputs before scanning them
        raise InputError(f"{what} is {len(text)} characters, the limit is {max_chars}; "
                         "shorten it")
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise InputError(f"{what} is not valid unicode (lone surrogate at position {i}); "
                             "send UTF-8 text")
        if cat == "Cc" and ch not in "\t\n\r":
            name = "NUL" if ch == "\0" else f"U+{ord(ch):04X}"
            raise InputError(f"{what} contains a control character ({name} at position {i}); "
                             "send plain text")
    cleaned = " ".join(unicodedata.normalize("NFC", text).split())
    if not cleaned:
        raise InputError(f"{what} is empty; send some text")
    if len(cleaned) > max_chars:
        raise InputError(f"{what} is {len(cleaned)} characters, the limit is {max_chars}; "
                         "shorten it")
    return cleaned


def validate_task(text: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """A task command, cleaned (NFC, single spaces, stripped), or InputError."""
    return _check_text(text, "task", limits.max_task_chars)


def validate_fact(text: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """A memory fact's text, cleaned like a task, or InputError."""
    return _check_text(text, "fact", limits.max_fact_chars)


def validate_key(key: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """A memory key, returned unchanged (keys are identifiers, never normalised)."""
    if not isinstance(key, str):
        raise InputError(f"memory key must be text, got {type(key).__name__}")
    if not key.strip():
        raise InputError("memory key is empty; give a short name such as drone_grounded")
    if len(key) > limits.max_key_chars:
        raise InputError(f"memory key is {len(key)} characters, the limit is "
                         f"{limits.max_key_chars}; use a shorter key")
    if not re.fullmatch(limits.key_pattern, key):
        raise InputError(f"memory key {_preview(key)} has invalid characters; use letters, "
                         "digits and _ . : - (starting with a letter or digit)")
    return key
