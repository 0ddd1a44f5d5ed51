"""Harness for the node integration tests: the robot_selector in its own process, over DDS.

`SelectorProcess` starts `python -m bitgen_ros.selector_node` with parameters, an edit token
in its environment and a log file, in a namespace unique to the test, so tests never hear
each other (the run also has its own ROS_DOMAIN_ID, tests/conftest.py). `TestClient` is an
rclpy node in the test process, spun by a background executor, with blocking helpers:
lifecycle transitions, service calls, publishing tasks and frames, waiting for answers.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# BITGEN_TEST_MODEL_DIR runs the integration tests against another exported model.
MODEL_DIR = Path(os.environ.get("BITGEN_TEST_MODEL_DIR") or REPO / "models" / "default")
HAVE_MODEL = (MODEL_DIR / "manifest.json").is_file()
NO_MODEL_REASON = (f"{MODEL_DIR}/manifest.json is absent: the shipped model has not been "
                   "exported yet (training/export.py)")
TOKEN = "test-edit-token-0123456789"


def have_runtime() -> bool:
    try:
        import bitgen_core.runtime  # noqa: F401
    except ImportError:
        return False
    return True


class SelectorProcess:
    """The node under test, in its own process."""

    def __init__(self, tmp: Path, params: dict | None = None, token: str | None = TOKEN,
                 namespace: str | None = None) -> None:
        self.ns = namespace or f"/t{uuid.uuid4().hex[:10]}"
        self.log_path = tmp / f"robot_selector{self.ns.replace('/', '_')}.log"
        self.params = {"model_dir": str(MODEL_DIR), "memory_path": str(tmp / "memory.json"),
                       "edits_per_minute": 0.0, "max_frame_age": 5.0, **(params or {})}
        self.env = dict(os.environ)
        self.env.pop("BITGEN_EDIT_TOKEN_FILE", None)
        if token is None:
            self.env.pop("BITGEN_EDIT_TOKEN", None)
        else:
            self.env["BITGEN_EDIT_TOKEN"] = token
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SelectorProcess":
        cmd = [sys.executable, "-m", "bitgen_ros.selector_node", "--ros-args",
               "-r", f"__ns:={self.ns}"]
        for k, v in self.params.items():
            cmd += ["-p", f"{k}:={_ros_value(v)}"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(REPO))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_mb(self) -> float:
        from bitgen_ros.diagnostics import rss_mb
        return rss_mb(self.proc.pid)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_selector(ros: "TestClient", tmp: Path, params: dict | None = None, *,
                     camera: bool = False, camera_reliability: str = "best_effort", **kwargs):
    """A configured, active selector the test client is attached to (task publisher matched,
    and the camera publisher too with `camera`); stopped on exit, even if bring-up failed."""
    proc = SelectorProcess(tmp, params=params, **kwargs).start()
    try:
        ros.attach(proc.ns, camera_reliability)
        ros.bring_up()
        ros.wait_matched(ros.task_pub)
        if camera:
            ros.wait_matched(ros.image_pub)
        yield proc
    finally:
        proc.stop()


def _ros_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v else "''"
    return repr(v)


class TestClient:
    """An rclpy node in the test process talking to one selector namespace."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "bitgen_test_client") -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        self.node = rclpy.create_node(f"{name}_{uuid.uuid4().hex[:6]}")
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self.selections: list = []
        self.trace: list[str] = []
        self.diagnostics: list = []
        self._subs: list = []
        self._clients: dict = {}      # (service type, name) -> a client kept for the run

    def close(self) -> None:
        for client in self._clients.values():
            self.node.destroy_client(client)
        self.executor.shutdown()
        self.node.destroy_node()

    # --- wiring to one selector ---
    def attach(self, ns: str, camera_reliability: str = "best_effort") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from bitgen_ros import qos
        from bitgen_ros.msg import RobotSelection, TaskCommand
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self.ns = ns
        self._subs = [
            self.node.create_subscription(RobotSelection, f"{ns}/bitgen/selection",
                                          self._keep(self.selections), qos.selection_profile(100)),
            self.node.create_subscription(String, f"{ns}/bitgen/trace",
                                          lambda m: self.trace.append(m.data),
                                          qos.selection_profile(100)),
            self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                          self._keep(self.diagnostics), 10),
        ]
        self.task_pub = self.node.create_publisher(TaskCommand, f"{ns}/bitgen/task",
                                                   qos.task_profile())
        self.text_pub = self.node.create_publisher(String, f"{ns}/bitgen/task_text",
                                                   qos.task_profile())
        self.image_pub = self.node.create_publisher(
            Image, f"{ns}/camera/image_raw", qos.profile(camera_reliability, 1))

    def _keep(self, sink: list):
        def cb(msg):
            with self._lock:
                sink.append(msg)
        return cb

    # --- lifecycle + services ---
    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        # One client per service for the whole run. A new client's first request can be lost:
        # wait_for_service sees the server in the ROS graph before DDS has matched this
        # client's own request writer / response reader with it, and a volatile request sent
        # in that gap never arrives. Hence the settle after the first match, paid once.
        client = self._clients.get((srv_type, name))
        if client is None or not client.service_is_ready():
            if client is None:
                client = self._clients[(srv_type, name)] = self.node.create_client(srv_type, name)
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            time.sleep(0.25)
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        if not future.done():
            client.remove_pending_request(future)
            raise TimeoutError(f"service {name} did not answer in {timeout} s")
        return future.result()

    def transition(self, label: str, timeout: float = 120.0) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        req = ChangeState.Request()
        req.transition.id = {"configure": Transition.TRANSITION_CONFIGURE,
                             "activate": Transition.TRANSITION_ACTIVATE,
                             "deactivate": Transition.TRANSITION_DEACTIVATE,
                             "cleanup": Transition.TRANSITION_CLEANUP}[label]
        # A lost request (see `call`) would otherwise cost the whole timeout and the test: wait
        # for the answer in slices, and between slices ask the node where it is. Arrived in the
        # target state: the transition happened (its answer was lost); still in the state it
        # started from: the request never arrived, send it again.
        target = {"configure": "inactive", "activate": "active", "deactivate": "inactive",
                  "cleanup": "unconfigured"}[label]
        end = time.monotonic() + timeout
        while True:
            try:
                return self.call(ChangeState, f"{self.ns}/robot_selector/change_state", req,
                                 min(30.0, max(1.0, end - time.monotonic()))).success
            except TimeoutError:
                if time.monotonic() >= end:
                    raise
                now = self.state(timeout=10.0)
                while now.endswith("ing") and time.monotonic() < end:   # "configuring": busy, not lost
                    time.sleep(0.5)
                    now = self.state(timeout=10.0)
                if now == target:
                    return True

    def state(self, timeout: float = 60.0) -> str:
        from lifecycle_msgs.srv import GetState
        return self.call(GetState, f"{self.ns}/robot_selector/get_state",
                         GetState.Request(), timeout).current_state.label

    def bring_up(self) -> None:
        assert self.transition("configure"), "configure failed"
        assert self.transition("activate"), "activate failed"

    def memory_edit(self, key: str, fact: str, token: str = TOKEN):
        from bitgen_ros.srv import MemoryEdit
        return self.call(MemoryEdit, f"{self.ns}/bitgen/memory_edit",
                         MemoryEdit.Request(key=key, fact=fact, token=token))

    def memory_forget(self, key: str, token: str = TOKEN):
        from bitgen_ros.srv import MemoryForget
        return self.call(MemoryForget, f"{self.ns}/bitgen/memory_forget",
                         MemoryForget.Request(key=key, token=token))

    def memory_list(self, prefix: str = "", timeout: float = 60.0):
        from bitgen_ros.srv import MemoryList
        return self.call(MemoryList, f"{self.ns}/bitgen/memory_list",
                         MemoryList.Request(key_prefix=prefix), timeout)

    def select(self, task: str, image=None, top_k: int = 0, timeout: float = 60.0):
        from sensor_msgs.msg import Image
        from bitgen_ros.image_convert import rgb_to_image_fields
        from bitgen_ros.srv import Select
        req = Select.Request(task=task, top_k=top_k)
        if image is not None:
            req.use_image = True
            req.image = image if isinstance(image, Image) else Image(**rgb_to_image_fields(image))
        return self.call(Select, f"{self.ns}/bitgen/select", req, timeout)

    def set_params(self, **values):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                for k, v in values.items()])
        return self.call(SetParameters, f"{self.ns}/robot_selector/set_parameters", req).results

    # --- topics ---
    def send_task(self, text: str, task_id: str | None = None, stamp=(0, 0),
                  frame_id: str = "base_link") -> str:
        from bitgen_ros.msg import TaskCommand
        task_id = task_id or uuid.uuid4().hex[:8]
        msg = TaskCommand(id=task_id, text=text)
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.header.frame_id = frame_id
        self.task_pub.publish(msg)
        return task_id

    def send_image(self, rgb: np.ndarray, encoding: str = "rgb8") -> None:
        from sensor_msgs.msg import Image
        from bitgen_ros.image_convert import rgb_to_image_fields
        msg = Image(**rgb_to_image_fields(rgb, encoding))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.image_pub.publish(msg)

    def wait_selection(self, task_id: str, timeout: float = 60.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                for msg in self.selections:
                    if msg.task_id == task_id:
                        return msg
            time.sleep(0.02)
        raise TimeoutError(f"no RobotSelection for task {task_id} within {timeout} s")

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}")

    def wait_matched(self, publisher, timeout: float = 30.0) -> None:
        self.wait_for(lambda: publisher.get_subscription_count() > 0, timeout,
                      f"a subscriber on {publisher.topic_name}")

    def task_and_wait(self, text: str, timeout: float = 60.0, **kw):
        return self.wait_selection(self.send_task(text, **kw), timeout)
