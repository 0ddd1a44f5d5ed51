"""Real DDS between separate processes: our generated interfaces go over the wire.

Each peer (dds_peer.py) is its own process with its own rclpy context, so the messages
cross Fast DDS exactly as between the node and its users. Names carry a per-test uuid and
the run has its own ROS_DOMAIN_ID (tests/conftest.py), so nothing else can answer.
"""
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

PEER = Path(__file__).with_name("dds_peer.py")
TIMEOUT_S = 60


def start_peer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PEER), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=TIMEOUT_S)
        raise AssertionError(f"peer exited ({proc.returncode}) early: {proc.stderr.read()}")
    return line.strip()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def peers():
    started = []
    yield lambda *args: started.append(start_peer(*args)) or started[-1]
    for proc in started:
        stop(proc)


def test_robot_selection_travels_from_publisher_to_subscriber_process(peers):
    topic = f"/bitgen_test/selection_{uuid.uuid4().hex}"
    sent = {
        "stamp": [1700000000, 123456789], "frame_id": "camera_optical",
        "task_id": "task-42", "task_text": "inspect the ship hull below the waterline",
        "robots": ["Underwater Robot", "Drone", "Robot with Legs"],
        "confidences": [0.875, 0.25, 0.125], "reasoning": "hull below water -> underwater",
        "latency_stages": ["vision", "memory", "prefill", "select", "trace", "total"],
        "latency_ms": [6.5, 0.25, 3.0, 0.5, 12.0, 22.25],
        "memory_keys_used": ["harbour_closed"], "model_id": "bitgen-tiny-test",
    }
    subscriber = peers("subscribe", topic)
    assert read_line(subscriber) == "ready"
    peers("publish", topic, json.dumps(sent))

    received = json.loads(read_line(subscriber))
    # float32 on the wire: the chosen values are exact in float32.
    assert received == sent
    assert subscriber.wait(timeout=TIMEOUT_S) == 0


def test_memory_edit_request_and_response_cross_processes(peers):
    service = f"/bitgen_test/memory_edit_{uuid.uuid4().hex}"
    server = peers("serve", service, "s3cret")
    assert read_line(server) == "ready"
    requests = [
        {"key": "drone_status", "fact": "the drone is grounded", "token": "s3cret"},
        {"key": "zone_b", "fact": "zone B is flooded", "token": "s3cret"},
        {"key": "zone_c", "fact": "zone C is on fire", "token": "wrong"},
    ]
    client = peers("call", service, json.dumps(requests))
    responses = [json.loads(read_line(client)) for _ in requests]
    assert client.wait(timeout=TIMEOUT_S) == 0

    assert responses[0] == {"success": True, "fact_count": 1,
                            "message": "stored 'drone_status': the drone is grounded"}
    assert responses[1] == {"success": True, "fact_count": 2,
                            "message": "stored 'zone_b': zone B is flooded"}
    assert responses[2] == {"success": False, "fact_count": 2,
                            "message": "rejected edit of 'zone_c': bad token"}
