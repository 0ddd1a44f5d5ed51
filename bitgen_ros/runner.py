"""Local runner: what `ros2 launch bitgen_ros robot_selector.launch.py` does, without launch.

`launch`/`launch_ros` are not on PyPI, so machines running ROS 2 from the wheels cannot use
`ros2 launch`. This runner starts the same nodes, as separate processes, with the same
parameters file and the same arguments as the launch file, and drives the robot_selector's
lifecycle (configure, then activate) through its real lifecycle services:

    python -m bitgen_ros.runner                      # selector only
    python -m bitgen_ros.runner demo:=true           # + generated scenes and sample tasks
    python -m bitgen_ros.runner model_dir:=/path namespace:=robot1 log_level:=debug
    (--model-dir /path --demo ... work too)

Ctrl-C stops every node it started (SIGINT, then SIGTERM, then SIGKILL). A configure that
fails (model missing, bad token file...) ends the runner with status 3 and the node's reason.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bitgen_ros.paths import config_file

# Launch arguments (name, default, description): the launch file declares the same ones.
LAUNCH_ARGUMENTS = (
    ("model_dir", "", "Exported model directory; empty uses the shipped models/default."),
    ("params_file", "", "Parameters YAML for all nodes; empty uses config/robot_selector.yaml."),
    ("namespace", "", "Namespace of every node, topic and service (e.g. robot1)."),
    ("demo", "false", "Also start the generated scene source and the sample task publisher."),
    ("log_level", "info", "Log level of the nodes: debug, info, warn, error or fatal."),
)
NODE_MODULES = {"robot_selector": "bitgen_ros.selector_node",
                "scene_source": "bitgen_ros.scene_source",
                "task_publisher": "bitgen_ros.task_publisher"}
EXIT_CONFIGURE_FAILED = 3


@dataclass
class RunConfig:
    model_dir: str = ""
    params_file: str = ""
    namespace: str = ""
    demo: bool = False
    log_level: str = "info"
    extra_params: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> {name: value}

    def params_path(self) -> str:
        return self.params_file or str(config_file("robot_selector.yaml"))

    def ns(self) -> str:
        return "/" + self.namespace.strip("/") if self.namespace.strip("/") else ""


def node_command(name: str, cfg: RunConfig) -> list[str]:
    """The command line of one node: `python -m <module> --ros-args ...` like launch_ros builds."""
    cmd = [sys.executable, "-m", NODE_MODULES[name], "--ros-args",
           "-r", f"__node:={name}", "--params-file", cfg.params_path(),
           "--log-level", cfg.log_level]
    if cfg.ns():
        cmd += ["-r", f"__ns:={cfg.ns()}"]
    params = dict(cfg.extra_params.get(name, {}))
    if name == "robot_selector" and cfg.model_dir:
        params["model_dir"] = cfg.model_dir
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The runner's environment, with the bitgen_ros it imported first on PYTHONPATH, so the
    children run the very same code (a checkout, or an install)."""
    env = dict(os.environ)
    import bitgen_ros
    root = str(Path(bitgen_ros.__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root] + parts)
    env.update(extra or {})
    return with_local_discovery(env)


def with_local_discovery(env: dict[str, str]) -> dict[str, str]:
    """Discovery stays on this host unless the user chose a scope (issue 7; the same rule as
    the launch file and scripts/setup/env.sh). Humble ignores the range: it needs
    ROS_LOCALHOST_ONLY. A variable the user set is an opt-out and is left alone."""
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or env.get("ROS_LOCALHOST_ONLY"):
        return env
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if env.get("ROS_DISTRO") == "humble":
        env["ROS_LOCALHOST_ONLY"] = "1"
    return env


class NodeProcess:
    """One node in its own process; `stop()` is Ctrl-C first, like launch does."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: str | None):
        self.name = name
        self._log = open(log_path, "ab") if log_path else None
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT
                                     if self._log else None, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        if self._log:
            self._log.close()
        return self.proc.wait()


class LifecycleClient:
    """Calls a lifecycle node's `change_state` / `get_state` services (lifecycle_msgs)."""

    def __init__(self, node, target: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState
        self._node = node
        self._change = node.create_client(ChangeState, f"{target}/change_state")
        self._get = node.create_client(GetState, f"{target}/get_state")
        self.target = target

    def _call(self, client, request, timeout: float):
        import rclpy
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{client.srv_name} did not appear within {timeout:g} s; is "
                               f"{self.target} running?")
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self._node, future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f"{client.srv_name} did not answer within {timeout:g} s")
        return future.result()

    def state(self, timeout: float = 10.0) -> str:
        from lifecycle_msgs.srv import GetState
        return self._call(self._get, GetState.Request(), timeout).current_state.label

    def transition(self, label: str, timeout: float = 60.0) -> bool:
        """Trigger `label` (configure, activate, deactivate, cleanup, shutdown)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        ids = {"configure": Transition.TRANSITION_CONFIGURE,
               "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}
        req = ChangeState.Request()
        req.transition.id = ids[label]
        return bool(self._call(self._change, req, timeout).success)


class Runner:
    """Starts the nodes of a RunConfig and brings the selector up; a context manager."""

    def __init__(self, cfg: RunConfig, env: dict[str, str] | None = None,
                 log_dir: str | None = None) -> None:
        self.cfg = cfg
        self.env = child_env(env)
        self.log_dir = log_dir
        self.procs: dict[str, NodeProcess] = {}

    def log_path(self, name: str) -> str | None:
        return os.path.join(self.log_dir, f"{name}.log") if self.log_dir else None

    def start(self, names: list[str] | None = None) -> "Runner":
        """Start `names` (default: the selector, plus the demo publishers with demo:=true)."""
        if names is None:
            names = ["robot_selector"] + (["scene_source", "task_publisher"]
                                          if self.cfg.demo else [])
        for name in names:
            self.procs[name] = NodeProcess(name, node_command(name, self.cfg), self.env,
                                           self.log_path(name))
        return self

    def bring_up(self, client_node, timeout: float = 120.0) -> tuple[bool, str]:
        """configure + activate the selector; (ok, why not)."""
        lc = LifecycleClient(client_node, f"{self.cfg.ns()}/robot_selector")
        if not lc.transition("configure", timeout):
            return False, ("configure failed: the node could not load its model or settings "
                           f"(its log says why{': ' + self.log_path('robot_selector') if self.log_dir else ' above'})")
        if not lc.transition("activate", timeout):
            return False, "activate failed (see the node's log)"
        return True, lc.state()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def __enter__(self) -> "Runner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_args(argv: list[str]) -> tuple[RunConfig, argparse.Namespace]:
    """Accepts launch-style `name:=value` as well as `--name value` (and `--demo`)."""
    converted = []
    for arg in argv:
        if ":=" in arg and not arg.startswith("-"):
            key, value = arg.split(":=", 1)
            converted += [f"--{key.replace('_', '-')}", value]
        else:
            converted.append(arg)
    ap = argparse.ArgumentParser(prog="python -m bitgen_ros.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default, help_text in LAUNCH_ARGUMENTS:
        if name == "demo":
            ap.add_argument("--demo", nargs="?", const="true", default=default, help=help_text)
        else:
            ap.add_argument(f"--{name.replace('_', '-')}", default=default, help=help_text)
    ap.add_argument("--duration", type=float, default=0.0,
                    help="Stop after this many seconds (0: run until Ctrl-C).")
    args = ap.parse_args(converted)
    if args.log_level not in ("debug", "info", "warn", "error", "fatal"):
        ap.error(f"log_level must be debug, info, warn, error or fatal, got {args.log_level}")
    cfg = RunConfig(model_dir=args.model_dir, params_file=args.params_file,
                    namespace=args.namespace, demo=str(args.demo).lower() in ("1", "true", "yes"),
                    log_level=args.log_level)
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
    import rclpy
    from rclpy.executors import ExternalShutdownException
    rclpy.init(args=["bitgen_runner"])  # our argv is not ROS arguments
    client = rclpy.create_node("bitgen_runner")
    runner = Runner(cfg).start()
    try:
        ok, detail = runner.bring_up(client)
        if not ok:
            print(f"runner: {detail}", file=sys.stderr)
            return EXIT_CONFIGURE_FAILED
        print(f"runner: robot_selector is {detail}; nodes: {', '.join(runner.procs)} "
              f"(Ctrl-C stops them)", flush=True)
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while deadline is None or time.monotonic() < deadline:
            if not runner.procs["robot_selector"].alive():
                print("runner: robot_selector exited", file=sys.stderr)
                return 1
            rclpy.spin_once(client, timeout_sec=0.2)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except TimeoutError as e:
        print(f"runner: {e}", file=sys.stderr)
        return 1
    finally:
        runner.stop()
        client.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
