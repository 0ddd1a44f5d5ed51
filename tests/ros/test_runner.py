"""The local runner (launch without `ros2 launch`) and `make demo` on it: the same arguments
as the launch file, the same params file, real processes, the lifecycle driven over DDS."""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from ros_node_harness import (HAVE_MODEL, MODEL_DIR, NO_MODEL_REASON, REPO)  # noqa: E402

from bitgen_ros.runner import (LAUNCH_ARGUMENTS, RunConfig, node_command,  # noqa: E402
                               parse_args)

LAUNCH_FILE = REPO / "launch" / "robot_selector.launch.py"


def test_runner_declares_exactly_the_launch_files_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text())
    launch_args = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                       if isinstance(node, ast.Assign)
                       and getattr(node.targets[0], "id", "") == "ARGUMENTS")
    assert tuple(launch_args) == LAUNCH_ARGUMENTS
    assert all(description for _, _, description in LAUNCH_ARGUMENTS)


def test_launch_style_and_flag_style_arguments_mean_the_same():
    a, _ = parse_args(["model_dir:=/m", "namespace:=robot1", "demo:=true", "log_level:=debug"])
    b, _ = parse_args(["--model-dir", "/m", "--namespace", "robot1", "--demo",
                       "--log-level", "debug"])
    assert a == b == RunConfig(model_dir="/m", namespace="robot1", demo=True, log_level="debug")
    assert parse_args([])[0].demo is False
    with pytest.raises(SystemExit):
        parse_args(["log_level:=loud"])


def test_node_commands_carry_the_params_file_namespace_and_overrides():
    cfg = RunConfig(model_dir="/models/x", namespace="robot1", log_level="warn")
    cmd = node_command("robot_selector", cfg)
    assert cmd[:3] == [sys.executable, "-m", "bitgen_ros.selector_node"]
    assert cmd[cmd.index("--params-file") + 1].endswith("config/robot_selector.yaml")
    assert "__ns:=/robot1" in cmd and "model_dir:=/models/x" in cmd
    assert cmd[cmd.index("--log-level") + 1] == "warn"
    # the demo nodes get what the launch file gives them: params file, namespace, log level
    for name in ("scene_source", "task_publisher"):
        demo_cmd = node_command(name, cfg)
        assert demo_cmd[:3] == [sys.executable, "-m", f"bitgen_ros.{name}"]
        assert f"__node:={name}" in demo_cmd and "__ns:=/robot1" in demo_cmd
        assert demo_cmd[demo_cmd.index("--params-file") + 1] == cmd[cmd.index("--params-file") + 1]
        assert demo_cmd[demo_cmd.index("--log-level") + 1] == "warn"
        assert "model_dir:=/models/x" not in demo_cmd
    assert RunConfig(demo=False).params_path() == RunConfig(params_file="").params_path()
    assert node_command("robot_selector", RunConfig(params_file="/p.yaml"))[
        cmd.index("--params-file") + 1] == "/p.yaml"


def run_runner(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitgen_ros.runner", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=str(REPO))


def test_runner_stops_with_status_3_when_configure_fails(tmp_path):
    res = run_runner(f"model_dir:={tmp_path / 'missing'}", f"namespace:=r{uuid.uuid4().hex[:6]}",
                     "--duration", "5")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "configure failed" in res.stderr


@pytest.mark.skipif(not HAVE_MODEL, reason=NO_MODEL_REASON)
def test_runner_brings_the_selector_up_and_ctrl_c_stops_everything(ros, tmp_path):
    ns = f"/r{uuid.uuid4().hex[:8]}"
    params = tmp_path / "params.yaml"
    params.write_text(Path(REPO / "config" / "robot_selector.yaml").read_text().replace(
        '"~/.bitgen/memory.json"', f'"{tmp_path / "memory.json"}"'))
    env = dict(os.environ, BITGEN_EDIT_TOKEN="runner-test-token-123")
    proc = subprocess.Popen([sys.executable, "-m", "bitgen_ros.runner", f"model_dir:={MODEL_DIR}",
                             f"namespace:={ns}", f"params_file:={params}", "demo:=true"],
                            cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        ros.attach(ns)
        ros.wait_for(lambda: _state_or_none(ros) == "active", timeout=90,
                     what="the runner to activate robot_selector")
        # demo:=true also started scene_source and task_publisher: sample answers arrive
        ros.wait_for(lambda: len(ros.selections) >= 1, timeout=60,
                     what="a selection of a sample task")
        assert ros.memory_edit("k1", "zone B is flooded",
                               token="runner-test-token-123").success
        assert (tmp_path / "memory.json").exists()      # the params file's memory_path is used
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "robot_selector is active" in out
    time.sleep(0.5)
    names = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"__ns:={ns}" not in names, "runner left nodes running"


def _state_or_none(ros):
    try:
        return ros.state(timeout=5)   # polled: a short try, so one lost answer is retried
    except TimeoutError:
        return None


@pytest.mark.skipif(not HAVE_MODEL, reason=NO_MODEL_REASON)
def test_make_demo_shows_selections_and_a_memory_edit_changing_the_answer():
    res = subprocess.run([sys.executable, "-m", "bitgen_ros.demo", "--model-dir", str(MODEL_DIR),
                          "--timeout", "60"], capture_output=True, text=True, timeout=85,
                         cwd=str(REPO))
    out = res.stdout
    assert "[aerial-survey]" in out and "robots" in out and "latency" in out and "trace" in out
    assert "memory_edit drone_grounded" in out and "memory_forget drone_grounded" in out
    assert res.returncode == 0, out + res.stderr
    assert "brought the drone back" in out
