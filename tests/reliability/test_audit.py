"""AuditLog: ordered append, size rotation keeping N files, ordered reading, no secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitgen_core.audit import AuditLog, audit_files, main, read_audit
from bitgen_core.auth import EditGuard, load_edit_token
from bitgen_core.errors import AuthError, InputError
from bitgen_core.store import text_sha256

REPO = Path(__file__).resolve().parents[2]


def test_records_are_appended_in_order_with_all_fields(tmp_path):
    log = AuditLog(tmp_path / "audit.log", source="test")
    log.record("write", "drone_grounded", "ok", text="the drone is grounded")
    log.record("forget", "drone_grounded", "ok")
    log.record("write", "zone_b", "refused", "edit token wrong", text="zone B is flooded")

    recs = list(read_audit(tmp_path / "audit.log"))
    assert [(r["action"], r["key"], r["outcome"]) for r in recs] == [
        ("write", "drone_grounded", "ok"), ("forget", "drone_grounded", "ok"),
        ("write", "zone_b", "refused")]
    assert recs[0]["fact_sha256"] == text_sha256("the drone is grounded")
    assert recs[1]["fact_sha256"] is None
    assert recs[2]["reason"] == "edit token wrong"
    assert all(r["source"] == "test" and r["time"].endswith("Z") for r in recs)
    assert [r["time"] for r in recs] == sorted(r["time"] for r in recs)
    # the fact text itself is not in the log, only its hash
    assert "grounded" not in (tmp_path / "audit.log").read_text().replace("drone_grounded", "")


def test_rotation_keeps_n_backups_and_read_audit_returns_them_in_order(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=2048, backups=3)
    n = 200
    for i in range(n):
        log.record("write", f"key{i:04d}", "ok", text=f"fact {i}")
    files = audit_files(path)
    assert [p.name for p in files] == ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"]
    assert not (tmp_path / "audit.log.4").exists()
    assert all(p.stat().st_size <= 2048 for p in files)

    keys = [r["key"] for r in read_audit(path)]
    idx = [int(k[3:]) for k in keys]
    assert idx == list(range(idx[0], n))  # contiguous, in order, ending with the newest
    assert 0 < idx[0] < n - 20            # the oldest were dropped by rotation, not more


def test_read_audit_filters_and_skips_torn_lines(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.record("write", "a", "ok", text="x")
    with open(path, "ab") as f:
        f.write(b'{"time": "2026-01-0')  # a torn line (power cut mid-append)
        f.write(b"\n")
    log.record("forget", "a", "ok")
    log.record("write", "b", "ok", text="y")
    assert [r["action"] for r in read_audit(path)] == ["write", "forget", "write"]
    assert [r["key"] for r in read_audit(path, action="write")] == ["a", "b"]
    assert [r["action"] for r in read_audit(path, key="a")] == ["write", "forget"]
    assert list(read_audit(path, since="2999-01-01T00:00:00Z")) == []
    with pytest.raises(InputError, match="ISO time"):
        list(read_audit(path, since="yesterday"))


def test_bad_action_or_outcome_is_refused(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    with pytest.raises(InputError):
        log.record("Write; rm -rf", "k", "ok")
    with pytest.raises(InputError):
        log.record("write", "k", "maybe")


def test_token_never_reaches_log_or_reprs(tmp_path, monkeypatch):
    secret = "s3cr3t-Token-For-Audit-0123"
    wrong = "wrong-Guess-Token-9876543"
    monkeypatch.setenv("BITGEN_EDIT_TOKEN", secret)
    monkeypatch.delenv("BITGEN_EDIT_TOKEN_FILE", raising=False)
    guard = EditGuard(load_edit_token())
    log = AuditLog(tmp_path / "audit.log", max_bytes=1024, backups=2)
    for supplied in (secret, wrong, None):
        try:
            guard.check(supplied)
            log.record("write", "k", "ok", text="the drone is grounded")
        except AuthError as e:
            log.record("write", "k", "refused", str(e), text="the drone is grounded")
            assert secret not in str(e) and wrong not in str(e)
    on_disk = "".join(p.read_text() for p in audit_files(tmp_path / "audit.log"))
    assert on_disk.count("\n") == 3
    for shown in (on_disk, repr(guard), repr(guard.token), str(guard.token), repr(log)):
        assert secret not in shown and wrong not in shown


def test_reader_cli_prints_records(tmp_path, capsys):
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=1024, backups=2)
    for i in range(30):
        log.record("write", f"k{i}", "ok", text=str(i))
    assert main([str(path), "--tail", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(l)["key"] for l in lines] == ["k28", "k29"]
    assert main([str(tmp_path / "missing.log")]) == 1

    out = subprocess.run([sys.executable, "-m", "bitgen_core.audit", str(path), "--key", "k29"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) == 1 and "k29" in out and "write" in out


def test_reader_escapes_terminal_control_sequences_from_untrusted_keys(tmp_path, capsys):
    path = tmp_path / "audit.log"
    AuditLog(path).record("write", "evil\x1b[2J\nkey", "refused", "edit token wrong\r")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and out.count("\n") == 1
    assert "evil\\x1b[2J\\nkey" in out
    assert next(read_audit(path))["key"] == "evil\x1b[2J\nkey"  # stored exactly
