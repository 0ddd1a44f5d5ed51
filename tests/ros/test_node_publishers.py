"""The demo publishers as real processes over DDS: scene_source frames (raw and JPEG, with a
camera-like QoS and stamps) and task_publisher commands (ids, count, stop by themselves)."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from ros_node_harness import REPO  # noqa: E402


def start(module: str, ns: str, *params: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__ns:={ns}"]
    for p in params:
        cmd += ["-p", p]
    return subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def collect(ros, msg_type, topic, qos_profile, until, timeout=30.0) -> list:
    got = []
    sub = ros.node.create_subscription(msg_type, topic, got.append, qos_profile)
    try:
        ros.wait_for(lambda: until(got), timeout=timeout, what=f"messages on {topic}")
    finally:
        ros.node.destroy_subscription(sub)
    return got


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_scene_source_publishes_generated_scenes_like_a_camera(ros, transport):
    from sensor_msgs.msg import CompressedImage, Image
    from bitgen_ros import qos
    ns = f"/s{uuid.uuid4().hex[:8]}"
    proc = start("bitgen_ros.scene_source", ns, "rate:=20.0", "families:=[aerial,underwater]",
                 "scene_period:=0.2", f"transport:={transport}", "encoding:=bgr8")
    try:
        if transport == "raw":
            got = collect(ros, Image, f"{ns}/camera/image_raw", qos.camera_profile(),
                          lambda g: len(g) >= 10)
            assert (got[0].width, got[0].height, got[0].encoding) == (224, 224, "bgr8")
            assert got[0].step == 224 * 3 and len(got[0].data) == 224 * 224 * 3
        else:
            got = collect(ros, CompressedImage, f"{ns}/camera/image_raw/compressed",
                          qos.camera_profile(), lambda g: len(g) >= 10)
            assert got[0].format == "jpeg" and bytes(got[0].data[:3]) == b"\xff\xd8\xff"
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got]
        assert stamps == sorted(stamps) and abs(stamps[-1] - time.time()) < 5
        assert got[0].header.frame_id == "camera"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "Traceback" not in out, out


def test_task_publisher_plays_the_sample_tasks_and_stops_by_itself(ros):
    from bitgen_ros import qos
    from bitgen_ros.msg import TaskCommand
    from bitgen_ros.paths import config_file
    from bitgen_ros.task_publisher import load_tasks
    ns = f"/p{uuid.uuid4().hex[:8]}"
    got = []
    sub = ros.node.create_subscription(TaskCommand, f"{ns}/bitgen/task", got.append,
                                       qos.task_profile())
    proc = start("bitgen_ros.task_publisher", ns, "rate:=10.0", "count:=3", "start_delay:=1.5")
    try:
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
        ros.wait_for(lambda: len(got) >= 3, timeout=10, what="3 task commands")
    finally:
        ros.node.destroy_subscription(sub)
        if proc.poll() is None:
            proc.kill()
    samples = load_tasks(config_file("sample_tasks.yaml"))
    assert [(m.id, m.text) for m in got] == samples[:3]
    assert all(m.header.stamp.sec > 0 for m in got)


def test_a_bad_source_stops_with_a_clear_message(ros, tmp_path):
    proc = start("bitgen_ros.scene_source", "/bad", "source:=folder", f"path:={tmp_path}")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "no images" in out
