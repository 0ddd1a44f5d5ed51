"""Discovery scope (issue 7, item 3): the default configs keep ROS 2 discovery on this host.

Anyone who can discover the node can call `/bitgen/memory_edit`, and the PyPI Fast DDS has
no DDS Security, so by default nothing should be discoverable beyond the local host:
`ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` (Jazzy, Kilted) and `ROS_LOCALHOST_ONLY=1`
(Humble, which ignores the former) unless the user set them — setting them is the opt-out
(`ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`, or `ROS_LOCALHOST_ONLY=0` on Humble).

Checked on every way the nodes are started: `scripts/setup/env.sh` (what `make demo` /
`make test` source), the local runner's child processes (the real process environment, read
from /proc), and the launch file's declared default (parsed, since `launch` is not on PyPI).

tests/conftest.py sets ROS_AUTOMATIC_DISCOVERY_RANGE for the whole run; each test removes it
first, so it sees what a user's fresh shell would get.

"""
from __future__ import annotations

import ast
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "robot_selector.launch.py"
ENV_SH = REPO / "scripts" / "setup" / "env.sh"
RANGE, LOCAL_ONLY = "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY"


@pytest.fixture()
def fresh_env(monkeypatch):
    """The environment of a user who set no discovery variable."""
    monkeypatch.delenv(RANGE, raising=False)
    monkeypatch.delenv(LOCAL_ONLY, raising=False)
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    return monkeypatch


# --- scripts/setup/env.sh (make demo, make test) ------------------------------------------

def _env_sh(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (RANGE, LOCAL_ONLY, "ROS_DISTRO")}
    env.update(extra)
    out = subprocess.run(["bash", "-c", f'. "{ENV_SH}" && env -0'], env=env, check=True,
                         capture_output=True, timeout=30).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def test_env_sh_keeps_discovery_on_localhost_by_default():
    assert _env_sh({}).get(RANGE) == "LOCALHOST"


def test_env_sh_leaves_a_users_discovery_range_alone():
    assert _env_sh({RANGE: "SUBNET"}).get(RANGE) == "SUBNET"


def test_env_sh_sets_localhost_only_on_humble():
    assert _env_sh({"ROS_DISTRO": "humble"}).get(LOCAL_ONLY) == "1"


# --- the local runner ----------------------------------------------------------------------

def _runner_env() -> dict[str, str]:
    from bitgen_ros.runner import RunConfig, Runner
    return Runner(RunConfig()).env


def test_runner_children_get_localhost_discovery_by_default(fresh_env):
    assert _runner_env().get(RANGE) == "LOCALHOST"


def test_runner_children_get_localhost_only_on_humble(fresh_env):
    fresh_env.setenv("ROS_DISTRO", "humble")
    assert _runner_env().get(LOCAL_ONLY) == "1"


@pytest.mark.parametrize("var,value", [(RANGE, "SUBNET"), (RANGE, "SYSTEM_DEFAULT"),
                                       (LOCAL_ONLY, "0")])
def test_runner_children_keep_the_users_opt_out(fresh_env, var, value):
    fresh_env.setenv(var, value)
    env = _runner_env()
    assert env.get(var) == value
    if var == LOCAL_ONLY:          # an explicit Humble choice is not overridden by a range
        assert RANGE not in env


def _started_node_environ(tmp_path) -> dict[str, str]:
    """The environment of a real robot_selector process started by the runner."""
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
    from bitgen_ros.runner import RunConfig, Runner
    runner = Runner(RunConfig(namespace=f"scope{os.getpid()}"), log_dir=str(tmp_path))
    runner.start(["robot_selector"])
    try:
        pid = runner.procs["robot_selector"].proc.pid
        environ = b""
        for _ in range(50):                  # /proc/PID/environ is filled in after exec
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if b"PYTHONPATH=" in environ:
                break
            time.sleep(0.05)
    finally:
        runner.stop()
    return dict(item.split("=", 1) for item in environ.decode(errors="replace").split("\0")
                if "=" in item)


def test_runner_started_node_process_has_localhost_discovery(fresh_env, tmp_path):
    assert _started_node_environ(tmp_path).get(RANGE) == "LOCALHOST"


def test_runner_started_node_process_keeps_the_users_opt_out(fresh_env, tmp_path):
    fresh_env.setenv(RANGE, "SUBNET")
    assert _started_node_environ(tmp_path).get(RANGE) == "SUBNET"


# --- the launch file -------------------------------------------------------------------------

def _launch_tree() -> ast.Module:
    if not LAUNCH_FILE.is_file():
        pytest.skip(f"{LAUNCH_FILE} is absent")
    return ast.parse(LAUNCH_FILE.read_text())


def _set_env_names(tree: ast.Module) -> set[str]:
    """Variables the launch file sets with SetEnvironmentVariable(name, ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", "")) == "SetEnvironmentVariable":
            args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == "name"]
            names |= {a.value for a in args if isinstance(a, ast.Constant)}
    return names


def _string_constants(tree: ast.Module) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def test_launch_file_parses_and_declares_its_arguments():
    tree = _launch_tree()
    assert "DeclareLaunchArgument" in {getattr(n, "id", None) for n in ast.walk(tree)}


def test_launch_file_sets_localhost_discovery_by_default():
    tree = _launch_tree()
    assert RANGE in _set_env_names(tree)
    assert "LOCALHOST" in _string_constants(tree)


def test_launch_file_sets_localhost_only_for_humble():
    tree = _launch_tree()
    assert LOCAL_ONLY in _set_env_names(tree)
    assert "humble" in _string_constants(tree)
