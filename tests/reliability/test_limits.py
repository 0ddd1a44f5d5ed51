"""Limits and text validators: any input gives a clean string or InputError, nothing else."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitgen_core.errors import InputError
from bitgen_core.limits import (DEFAULT_LIMITS, Limits, validate_fact, validate_key,
                                validate_task)

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
anything = st.one_of(st.text(), st.text(min_size=250, max_size=1500), st.binary(),
                     st.integers(), st.none(), st.lists(st.text(), max_size=3))


def _clean_output_invariants(out: str, max_chars: int) -> None:
    assert isinstance(out, str) and out and out == out.strip()
    assert len(out) <= max_chars
    assert "  " not in out and "\n" not in out and "\x00" not in out
    assert unicodedata.is_normalized("NFC", out)
    out.encode("utf-8")  # no lone surrogates


@FUZZ
@given(anything)
def test_validate_task_returns_clean_text_or_input_error(value):
    try:
        out = validate_task(value)
    except InputError as e:
        assert "\n" not in str(e) and str(e)
        return
    _clean_output_invariants(out, DEFAULT_LIMITS.max_task_chars)


@FUZZ
@given(anything)
def test_validate_fact_returns_clean_text_or_input_error(value):
    small = Limits(max_fact_chars=40)
    try:
        out = validate_fact(value, small)
    except InputError as e:
        assert "\n" not in str(e) and str(e)
        return
    _clean_output_invariants(out, 40)


@FUZZ
@given(st.one_of(st.text(), st.text(alphabet="abcXYZ019_.:-", max_size=80), st.binary()))
def test_validate_key_returns_key_unchanged_or_input_error(value):
    try:
        out = validate_key(value)
    except InputError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert out == value and 1 <= len(out) <= DEFAULT_LIMITS.max_key_chars
    assert out.isascii() and out[0].isalnum()


def test_examples_of_accepted_text_are_cleaned():
    assert validate_task("  Inspect the\tpipe \n under  zone B ") == "Inspect the pipe under zone B"
    assert validate_task("Cafe\u0301 délivery") == "Café délivery"  # NFC
    assert validate_fact("Zone B is flooded 🌊") == "Zone B is flooded 🌊"
    assert validate_key("drone_grounded") == "drone_grounded"
    assert validate_key("site:zone-b.flooded") == "site:zone-b.flooded"


@pytest.mark.parametrize("value, message", [
    ("", "task is empty"),
    (" \t\n ", "task is empty"),
    ("a" * 1001, "task is 1001 characters, the limit is 1000"),
    ("a" * 100_000, "task is 100000 characters, the limit is 1000"),
    ("go\x00now", "control character (NUL at position 2)"),
    ("go\x1b[31mnow", "control character (U+001B at position 2)"),
    ("bad \udc80 bytes", "not valid unicode (lone surrogate at position 4)"),
    (b"bytes", "task must be text, got bytes"),
])
def test_task_refusals_say_what_is_wrong(value, message):
    with pytest.raises(InputError, match=re.escape(message)):
        validate_task(value)


def test_limits_apply_after_whitespace_cleanup():
    assert validate_task("a" + " " * 5000 + "b") == "a b"  # huge whitespace is not content
    assert len(validate_task("word " * 199 + "word")) == 999
    with pytest.raises(InputError, match="fact is 301 characters, the limit is 300"):
        validate_fact("f" * 301)


@pytest.mark.parametrize("key, message", [
    ("", "memory key is empty"),
    ("k" * 65, "memory key is 65 characters, the limit is 64"),
    ("has space", "invalid characters"),
    ("_leading", "invalid characters"),
    ("naïve", "invalid characters"),
    ("new\nline", "invalid characters"),
    (7, "memory key must be text"),
])
def test_key_refusals_say_what_is_wrong(key, message):
    with pytest.raises(InputError, match=message):
        validate_key(key)


def test_shipped_limits_yaml_matches_the_defaults():
    assert Limits.from_yaml(REPO / "config" / "limits.yaml") == DEFAULT_LIMITS


def test_limits_from_yaml_overrides_flat_or_nested_and_refuses_typos(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("max_task_chars: 200\nmax_facts: 10\n")
    lim = Limits.from_yaml(flat)
    assert lim.max_task_chars == 200 and lim.max_facts == 10
    assert lim.max_fact_chars == DEFAULT_LIMITS.max_fact_chars
    with pytest.raises(InputError, match="task is 201 characters, the limit is 200"):
        validate_task("t" * 201, lim)

    nested = tmp_path / "nested.yaml"
    nested.write_text("limits:\n  max_key_chars: 8\n")
    assert Limits.from_yaml(nested).max_key_chars == 8

    typo = tmp_path / "typo.yaml"
    typo.write_text("max_task_char: 200\n")
    with pytest.raises(InputError, match="unknown limit.*max_task_char"):
        Limits.from_yaml(typo)
    for bad in ("max_facts: 0\n", "max_facts: -3\n", "max_facts: ten\n", "key_pattern: '('\n",
                "[1, 2]\n", "max_facts: [\n"):
        typo.write_text(bad)
        with pytest.raises(InputError):
            Limits.from_yaml(typo)
    with pytest.raises(InputError, match="cannot read limits file"):
        Limits.from_yaml(tmp_path / "missing.yaml")
