"""Load against a running robot_selector, for the ROS benchmark and the soak (scripts/).

`LoadSession` starts the selector in its own process with the local runner (the same
command line and parameters file as `ros2 launch`), brings it up through its lifecycle
services and tears everything down on exit; a camera publisher on its own thread (a fixed
frame rate whatever the rest of the process does, each message stamped when sent), task
commands stamped and timed at publication, and a recorder of the RobotSelection answers by
task id. Both scripts measure the same way because they drive the node with the same code.
"""

from __future__ import annotations

import os
import platform
import threading
import time
import uuid

import numpy as np

TASKS = ["Fly over the forest fire and take aerial photos of how far it has spread",
         "Inspect the hull of the ship below the waterline for cracks",
         "Move the pallets from the loading dock to aisle 12 of the warehouse",
         "Search the collapsed building for survivors, climbing over the rubble"]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def machine() -> dict:
    """What a figure was measured on, for the tables (with the load average at the time)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import onnxruntime
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
            "arch": platform.machine(), "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "ros": os.environ.get("ROS_DISTRO") or "kilted (PyPI ros-* wheels)",
            "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def camera_frames(width: int, height: int) -> list[np.ndarray]:
    """Four rendered scenes (aerial, underwater, warehouse, rubble) as RGB arrays."""
    from PIL import Image
    from bitgen_core.data.render import render_scene
    return [np.asarray(Image.fromarray(render_scene(f, 3).image).resize((width, height)))
            for f in ("aerial", "underwater", "warehouse", "rubble")]


class CameraPublisher:
    """Publishes `frames` (RGB arrays, cycled) as rgb8 Images at `fps` from a daemon thread."""

    def __init__(self, node, publisher, frames: list[np.ndarray], fps: float) -> None:
        from sensor_msgs.msg import Image
        from bitgen_ros.image_convert import rgb_to_image_fields
        self._node, self._pub, self._period = node, publisher, 1.0 / fps
        self._msgs = [Image(**rgb_to_image_fields(f)) for f in frames]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.published = 0

    def start(self) -> "CameraPublisher":
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        nxt = time.perf_counter()
        while not self._stop.is_set():
            msg = self._msgs[self.published % len(self._msgs)]
            msg.header.stamp = self._node.get_clock().now().to_msg()
            self._pub.publish(msg)
            self.published += 1
            nxt += self._period
            # a late frame is sent at once, never in a burst: the schedule restarts from now
            nxt = max(nxt, time.perf_counter() - self._period)
            time.sleep(max(0.0, nxt - time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def fps(self) -> float:
        """Frames published per second since start."""
        elapsed = time.perf_counter() - self._started
        return self.published / elapsed if elapsed > 0 else 0.0


class SelectionRecorder:
    """Task commands sent and RobotSelections received, by task id, on one clock.

    `origin` shifts the clock (the soak counts from the end of its warm-up); times are
    `time.perf_counter() - origin` seconds.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.origin = 0.0
        self.sent: dict[str, float] = {}
        self.got: dict[str, tuple[float, object]] = {}       # id -> (t received, message)

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def subscribe(self, node, topic: str):
        from bitgen_ros import qos
        from bitgen_ros.msg import RobotSelection
        return node.create_subscription(RobotSelection, topic, self.on_selection,
                                        qos.selection_profile(100))

    def send(self, node, publisher, task_id: str, text: str) -> None:
        from bitgen_ros.msg import TaskCommand
        msg = TaskCommand(id=task_id, text=text)
        msg.header.stamp = node.get_clock().now().to_msg()
        with self.lock:
            self.sent[task_id] = self.now()
        publisher.publish(msg)

    def on_selection(self, msg) -> None:
        t = self.now()
        with self.lock:
            if msg.task_id in self.sent:
                self.got[msg.task_id] = (t, msg)

    def answered(self, task_id: str) -> bool:
        with self.lock:
            return task_id in self.got

    def wait_answered(self, task_id: str, timeout: float, alive=lambda: True) -> bool:
        end = time.perf_counter() + timeout
        while time.perf_counter() < end and alive():
            if self.answered(task_id):
                return True
            time.sleep(0.05)
        return self.answered(task_id)

    def snapshot(self) -> tuple[dict[str, float], dict[str, tuple[float, object]]]:
        with self.lock:
            return dict(self.sent), dict(self.got)


def latency_stages(msg) -> dict[str, float]:
    """A RobotSelection's latency breakdown ({stage: ms}; `total`, `queue`, ...)."""
    return {k: float(v) for k, v in zip(msg.latency_stages, msg.latency_ms)}


class LoadSession:
    """The selector in its own process, and in this one a client node (spun by a background
    executor) with the recorder subscribed, a task publisher and a camera publisher, both
    matched by the node. A context manager: everything stops on exit, also on errors."""

    def __init__(self, cfg, name: str, env: dict[str, str] | None = None,
                 log_dir: str | None = None, recorder: SelectionRecorder | None = None) -> None:
        self.cfg, self.name, self.env, self.log_dir = cfg, name, env, log_dir
        self.recorder = recorder or SelectionRecorder()
        self.node = self.runner = self.task_pub = self.cam_pub = None
        self._executor = None
        self._cameras: list[CameraPublisher] = []

    def __enter__(self) -> "LoadSession":
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import Image
        from bitgen_ros import qos
        from bitgen_ros.msg import TaskCommand
        from bitgen_ros.runner import Runner
        rclpy.init(args=[self.name])
        try:
            self.node = rclpy.create_node(f"{self.name}_{uuid.uuid4().hex[:6]}")
            self.runner = Runner(self.cfg, env=self.env, log_dir=self.log_dir).start(
                ["robot_selector"])
            ok, detail = self.runner.bring_up(self.node)
            if not ok:
                raise SystemExit(f"{self.name}: {detail}")
            ns = self.cfg.ns()
            self.recorder.subscribe(self.node, f"{ns}/bitgen/selection")
            self.task_pub = self.node.create_publisher(TaskCommand, f"{ns}/bitgen/task",
                                                       qos.task_profile())
            self.cam_pub = self.node.create_publisher(Image, f"{ns}/camera/image_raw",
                                                      qos.camera_profile())
            self._executor = MultiThreadedExecutor(num_threads=3)
            self._executor.add_node(self.node)
            threading.Thread(target=self._executor.spin, daemon=True).start()
            end = time.monotonic() + 60.0
            while (self.task_pub.get_subscription_count() == 0
                   or self.cam_pub.get_subscription_count() == 0):
                if time.monotonic() > end:
                    raise SystemExit(f"{self.name}: the selector never subscribed to the "
                                     "task and camera topics")
                time.sleep(0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_camera(self, frames: list[np.ndarray], fps: float) -> CameraPublisher:
        camera = CameraPublisher(self.node, self.cam_pub, frames, fps).start()
        self._cameras.append(camera)
        return camera

    def send_task(self, task_id: str, text: str) -> None:
        self.recorder.send(self.node, self.task_pub, task_id, text)

    def selector_pid(self) -> int:
        return self.runner.procs["robot_selector"].proc.pid

    def selector_alive(self) -> bool:
        return self.runner.procs["robot_selector"].alive()

    def __exit__(self, *exc) -> None:
        import rclpy
        for camera in self._cameras:
            camera.stop()
        if self.runner is not None:
            self.runner.stop()
        if self._executor is not None:
            self._executor.shutdown()
        if self.node is not None:
            self.node.destroy_node()
        rclpy.try_shutdown()
