"""The memory services over real DDS: an edit changes the answer at once, a forget reverts
it, facts survive a restart (and a kill -9), and every change is authorised, limited and
audited. The node runs in its own process with the shipped model."""
from __future__ import annotations

import signal

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from bitgen_ros.demo import AERIAL_TASK as AERIAL, drone_removed, drone_selected  # noqa: E402
from ros_node_harness import (HAVE_MODEL, NO_MODEL_REASON, TOKEN,  # noqa: E402
                              running_selector)

pytestmark = pytest.mark.skipif(not HAVE_MODEL, reason=NO_MODEL_REASON)


@pytest.fixture
def node(ros, tmp_path):
    with running_selector(ros, tmp_path, {"use_image": False}) as proc:
        yield proc


def test_grounding_the_drone_removes_it_and_forgetting_brings_it_back(ros, node):
    """Judged on the drone's confidence (bitgen_ros.demo): selected (>= 0.5) before, gone
    (< 0.05 or not listed) with the fact, selected again after the forget."""
    assert drone_selected(ros.task_and_wait(AERIAL))
    edit = ros.memory_edit("drone_grounded", "the drone is grounded")
    assert edit.success, edit.message
    assert edit.fact_count == 1
    grounded = ros.task_and_wait(AERIAL)
    assert drone_removed(grounded), list(zip(grounded.robots, grounded.confidences))
    assert "drone_grounded" in grounded.memory_keys_used
    forget = ros.memory_forget("drone_grounded")
    assert forget.success, forget.message
    assert drone_selected(ros.task_and_wait(AERIAL))
    assert ros.memory_list().keys == []


def test_facts_survive_a_restart_and_a_kill_9(ros, node, tmp_path):
    assert ros.memory_edit("zone_b", "zone B is flooded").success
    assert ros.memory_edit("drone_grounded", "the drone is grounded").success
    node.stop(signal.SIGKILL)
    # A new namespace: the killed node's endpoints linger in discovery until their lease
    # expires, and a request sent to them would never be answered.
    with running_selector(ros, tmp_path):
        listed = ros.memory_list()
        assert listed.success and listed.keys == ["zone_b", "drone_grounded"]
        assert listed.facts[1] == "the drone is grounded"
        assert listed.write_times[0] <= listed.write_times[1]
        assert [k for k in ros.memory_list("zone").keys] == ["zone_b"]
        assert drone_removed(ros.task_and_wait(AERIAL))


def test_edits_need_the_token_and_respect_the_limits(ros, node):
    wrong = ros.memory_edit("k1", "the drone is grounded", token="not-the-token-at-all")
    assert not wrong.success and "token wrong" in wrong.message
    missing = ros.memory_edit("k1", "the drone is grounded", token="")
    assert not missing.success and "token missing" in missing.message
    huge = ros.memory_edit("k1", "x" * 5000)
    assert not huge.success and "limit" in huge.message
    bad_key = ros.memory_edit("../etc", "fact")
    assert not bad_key.success and "key" in bad_key.message
    empty = ros.memory_edit("k1", "   ")
    assert not empty.success and "empty" in empty.message
    unknown = ros.memory_forget("never_written")
    assert not unknown.success and unknown.message
    assert ros.memory_list().keys == []
    assert node.alive()
    assert TOKEN not in node.log()                      # the secret is never logged


def test_every_change_and_refusal_is_audited(ros, node, tmp_path):
    from bitgen_core.audit import read_audit
    assert ros.memory_edit("drone_grounded", "the drone is grounded").success
    assert not ros.memory_edit("drone_grounded", "x", token="wrong-token-123456").success
    assert ros.memory_forget("drone_grounded").success
    records = list(read_audit(tmp_path / "memory.audit.log"))
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("write", "ok"), ("write", "refused"), ("forget", "ok")]
    assert records[0]["fact_sha256"] and "token wrong" in records[1]["reason"]


def test_read_only_refuses_edits_once_switched_on(ros, node):
    assert ros.set_params(read_only=True)[0].successful
    refused = ros.memory_edit("k", "the drone is grounded")
    assert not refused.success and "read-only" in refused.message
    assert not ros.set_params(read_only=False)[0].successful


def test_without_a_configured_token_edits_are_refused_clearly(ros, tmp_path):
    with running_selector(ros, tmp_path, token=None):
        resp = ros.memory_edit("k", "the drone is grounded", token="anything-at-all")
        assert not resp.success and "BITGEN_EDIT_TOKEN" in resp.message


def test_a_corrupt_memory_file_is_moved_aside_and_the_node_says_so(ros, tmp_path):
    store = tmp_path / "state" / "memory.json"
    store.parent.mkdir()
    store.write_text('{"format": "bitgen-memory-store", "version": 1, "payload": {"fa')
    # configure still succeeds (running_selector brings the node up)
    with running_selector(ros, tmp_path, {"memory_path": str(store)}) as proc:
        assert ros.memory_list().keys == []
        assert "moved aside" in proc.log()
        assert list(store.parent.glob("memory.json.corrupt-*")), "the bad file was discarded"
        assert ros.memory_edit("k", "zone B is flooded").success


def test_the_memory_directory_is_created_on_a_fresh_robot(ros, tmp_path):
    store = tmp_path / "fresh" / "bitgen" / "memory.json"
    with running_selector(ros, tmp_path, {"memory_path": str(store)}):
        assert ros.memory_edit("k", "zone B is flooded").success
        assert store.exists() and (store.parent.stat().st_mode & 0o077) == 0
