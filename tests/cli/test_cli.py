"""The `bitgen` CLI: select (single, JSON, batch), memory add/forget/list/audit under the edit
token rules, verify, and one-line errors with non-zero exits and no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bitgen_core.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "operator-token-0123456789"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def token_env(monkeypatch):
    monkeypatch.delenv("BITGEN_EDIT_TOKEN_FILE", raising=False)
    monkeypatch.setenv("BITGEN_EDIT_TOKEN", TOKEN)


def test_select_prints_top_k_and_json(exported, capsys, tmp_path):
    img = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(img)
    code, out, _ = run(capsys, "select", "--model", str(exported.directory), "--task", "inspect the roof",
                       "--image", str(img), "--top-k", "2")
    assert code == 0 and out.startswith("1. ") and "\n2. " in out and "reasoning:" in out
    code, out, _ = run(capsys, "select", "--model", str(exported.directory), "--task", "inspect the roof", "--json")
    rec = json.loads(out)
    assert code == 0 and len(rec["robots"]) == 5 and len(rec["top_k"]) == 3
    assert rec["confidences"] == sorted(rec["confidences"], reverse=True)


def test_batch_skips_bad_lines_and_runs_the_rest(exported, capsys, tmp_path):
    Image.new("RGB", (32, 32), (0, 90, 200)).save(tmp_path / "water.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    lines = [{"id": "a", "task": "dive to the wreck", "image": "water.png"},
             {"id": "b", "task": ""},
             "this is not json",
             {"id": "c", "task": "carry boxes", "image": "bad.png"},
             {"id": "d", "task": "map the forest"}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    code, _, err = run(capsys, "select", "--model", str(exported.directory), "--batch", str(src),
                       "--out", str(tmp_path / "out.jsonl"))
    assert code == 0
    recs = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a", "d"]
    assert set(recs[0]) == {"id", "robots", "confidences", "reasoning", "latency_ms", "memory_keys_used"}
    assert len(recs[0]["robots"]) == 5
    assert sum(ln.startswith("line ") for ln in err.splitlines()) == 3
    assert "2 selections written" in err and "3 lines skipped" in err


def test_memory_commands_share_the_store_and_apply_to_select(exported, capsys, tmp_path, token_env):
    mem = str(tmp_path / "facts.json")
    m = ["--model", str(exported.directory)]
    code, out, _ = run(capsys, "memory", "add", *m, "--memory", mem, "--key", "drone_grounded",
                       "--fact", "the drone is grounded")
    assert code == 0 and "stored" in out
    code, out, _ = run(capsys, "memory", "list", "--memory", mem, "--json")
    assert [f["key"] for f in json.loads(out)] == ["drone_grounded"]
    code, out, _ = run(capsys, "select", *m, "--task", "the drone is grounded", "--memory", mem, "--json")
    assert json.loads(out)["memory_keys_used"] == ["drone_grounded"]
    code, out, _ = run(capsys, "memory", "forget", *m, "--memory", mem, "--key", "drone_grounded")
    assert code == 0 and "forgot" in out
    code, _, err = run(capsys, "memory", "forget", *m, "--memory", mem, "--key", "drone_grounded")
    assert code == 3 and err.startswith("error: no fact") and err.count("\n") == 1
    code, out, _ = run(capsys, "memory", "audit", "--log", str(tmp_path / "facts.audit.log"))
    assert code == 0 and out.count("\n") == 3
    assert [ln.split()[1:3] for ln in out.splitlines()] == [["write", "ok"], ["forget", "ok"], ["forget", "error"]]


def test_memory_edits_follow_the_token_rules(exported, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("BITGEN_EDIT_TOKEN", raising=False)
    monkeypatch.delenv("BITGEN_EDIT_TOKEN_FILE", raising=False)
    mem = str(tmp_path / "facts.json")
    args = ["memory", "add", "--model", str(exported.directory), "--memory", mem, "--key", "k", "--fact", "x y"]
    code, _, err = run(capsys, *args)
    assert code == 3 and "no edit token configured" in err
    code, _, _ = run(capsys, *args, "--allow-unauthenticated")
    assert code == 0
    monkeypatch.setenv("BITGEN_EDIT_TOKEN", TOKEN)
    wrong = tmp_path / "tok"
    wrong.write_text("somebody-elses-token")
    code, _, err = run(capsys, *args, "--token-file", str(wrong))
    assert code == 3 and "token wrong" in err
    code, out, _ = run(capsys, "memory", "list", "--memory", mem)
    assert out.startswith("k ")


def test_verify_ok_and_tampered(exported, model_copy, capsys):
    code, out, _ = run(capsys, "verify", str(exported.directory))
    assert code == 0 and out.startswith("OK test-nano")
    with open(model_copy / "selector.onnx", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    code, _, err = run(capsys, "verify", str(model_copy))
    assert code == 2 and "selector.onnx" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, code, text", [
    (["select", "--task", ""], 1, "task is empty"),
    (["select", "--task", "x" * 5000], 1, "limit"),
    (["select", "--task", "go", "--image", "/nonexistent.png"], 1, "image not found"),
])
def test_errors_are_one_line_without_traceback(exported, capsys, argv, code, text):
    got, out, err = run(capsys, *argv[:1], "--model", str(exported.directory), *argv[1:])
    assert got == code and text in err and err.startswith("error:") and err.count("\n") == 1


def test_console_errors_in_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, BITGEN_MODEL_DIR=str(tmp_path / "missing"))
    p = subprocess.run([sys.executable, "-m", "bitgen_core.cli", "select", "--task", "go"], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=60)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1 and "not found" in p.stderr
