"""One side of a two-process DDS exchange, started by test_dds_roundtrip.py.

    python dds_peer.py publish   TOPIC MESSAGE_JSON   publish a RobotSelection until killed
    python dds_peer.py subscribe TOPIC                print the first RobotSelection as JSON
    python dds_peer.py serve     SERVICE TOKEN        MemoryEdit server, handles until killed
    python dds_peer.py call      SERVICE REQUESTS_JSON   call MemoryEdit, print responses

Each process is its own rclpy context and DDS participant; the parent only reads stdout.
Lines on stdout are JSON (or the word "ready"); everything else goes to stderr.
"""
import json
import sys
import time

import rclpy
from rclpy.node import Node

from bitgen_ros.msg import RobotSelection
from bitgen_ros.srv import MemoryEdit

TIMEOUT_S = 45.0


def selection_from_dict(d: dict) -> RobotSelection:
    msg = RobotSelection()
    msg.header.stamp.sec = d["stamp"][0]
    msg.header.stamp.nanosec = d["stamp"][1]
    msg.header.frame_id = d["frame_id"]
    for field in ("task_id", "task_text", "robots", "confidences", "reasoning",
                  "latency_stages", "latency_ms", "memory_keys_used", "model_id"):
        setattr(msg, field, d[field])
    return msg


def selection_to_dict(msg: RobotSelection) -> dict:
    return {
        "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
        "frame_id": msg.header.frame_id,
        "task_id": msg.task_id, "task_text": msg.task_text, "robots": list(msg.robots),
        "confidences": [float(c) for c in msg.confidences], "reasoning": msg.reasoning,
        "latency_stages": list(msg.latency_stages),
        "latency_ms": [float(x) for x in msg.latency_ms],
        "memory_keys_used": list(msg.memory_keys_used), "model_id": msg.model_id,
    }


def emit(obj) -> None:
    print(obj if isinstance(obj, str) else json.dumps(obj), flush=True)


def publish(node: Node, topic: str, payload: str) -> None:
    pub = node.create_publisher(RobotSelection, topic, 10)
    msg = selection_from_dict(json.loads(payload))
    deadline = time.monotonic() + TIMEOUT_S
    # Keep publishing: a sample sent before discovery matched the subscriber would be lost.
    while time.monotonic() < deadline:
        if pub.get_subscription_count() > 0:
            pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.1)


def subscribe(node: Node, topic: str) -> None:
    received = []
    node.create_subscription(RobotSelection, topic, received.append, 10)
    emit("ready")
    deadline = time.monotonic() + TIMEOUT_S
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        sys.exit("subscriber: no RobotSelection within the timeout")
    emit(selection_to_dict(received[0]))


def serve(node: Node, service: str, token: str) -> None:
    facts: dict[str, str] = {}

    def handle(request, response):
        if request.token != token:
            response.success = False
            response.message = f"rejected edit of '{request.key}': bad token"
        else:
            facts[request.key] = request.fact
            response.success = True
            response.message = f"stored '{request.key}': {request.fact}"
        response.fact_count = len(facts)
        return response

    node.create_service(MemoryEdit, service, handle)
    emit("ready")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)


def call(node: Node, service: str, requests_json: str) -> None:
    client = node.create_client(MemoryEdit, service)
    if not client.wait_for_service(timeout_sec=TIMEOUT_S):
        sys.exit("client: MemoryEdit service did not appear within the timeout")
    for req in json.loads(requests_json):
        future = client.call_async(MemoryEdit.Request(**req))
        rclpy.spin_until_future_complete(node, future, timeout_sec=TIMEOUT_S)
        if not future.done():
            sys.exit("client: no MemoryEdit response within the timeout")
        res = future.result()
        emit({"success": res.success, "message": res.message, "fact_count": res.fact_count})


def main() -> None:
    role, name, *rest = sys.argv[1:]
    rclpy.init()
    node = rclpy.create_node(f"bitgen_test_{role}")
    try:
        {"publish": publish, "subscribe": subscribe,
         "serve": serve, "call": call}[role](node, name, *rest)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
