"""The robot_selector in its own process over DDS, before any model answers: lifecycle,
services that say why they cannot act, validated parameters, diagnostics, quiet Ctrl-C,
and a configure that fails clearly when the model cannot load."""
from __future__ import annotations

import signal

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from ros_node_harness import (HAVE_MODEL, NO_MODEL_REASON, SelectorProcess,  # noqa: E402
                              have_runtime)


@pytest.fixture(scope="module")
def unconfigured(ros, tmp_path_factory):
    """One node left unconfigured (nothing in this module needs the model)."""
    node = SelectorProcess(tmp_path_factory.mktemp("lifecycle")).start()
    ros.attach(node.ns)
    yield node
    node.stop()


def test_services_answer_with_a_reason_before_configure(ros, unconfigured):
    assert ros.state() == "unconfigured"
    edit = ros.memory_edit("drone_grounded", "the drone is grounded")
    assert not edit.success and "configure it first" in edit.message
    listed = ros.memory_list()
    assert not listed.success and "unconfigured" in listed.message
    sel = ros.select("fly over the field")
    assert not sel.success and "activate it first" in sel.message
    assert unconfigured.alive()


def test_parameters_are_validated_and_refusals_say_why(ros, unconfigured):
    results = ros.set_params(top_k=0)
    assert not results[0].successful and results[0].reason
    results = ros.set_params(camera_qos_reliability="sometimes")
    assert not results[0].successful and "best_effort" in results[0].reason
    results = ros.set_params(allow_unauthenticated_edits=True)
    assert not results[0].successful
    results = ros.set_params(top_k=5, max_frame_age=2.5, use_image=False, max_trace_tokens=8)
    assert all(r.successful for r in results), [r.reason for r in results]


def test_read_only_cannot_be_switched_off_once_on(ros, unconfigured):
    assert ros.set_params(read_only=True)[0].successful
    refused = ros.set_params(read_only=False)[0]
    assert not refused.successful and "not off" in refused.reason


def test_diagnostics_report_the_lifecycle_state_and_memory(ros, unconfigured):
    name = f"bitgen: {unconfigured.ns}/robot_selector"

    def ours():
        return [s for a in list(ros.diagnostics) for s in a.status if s.name == name]

    ros.wait_for(lambda: ours(), timeout=30, what="a /diagnostics message from the node")
    values = {kv.key: kv.value for kv in ours()[-1].values}
    assert values["lifecycle_state"] == "unconfigured"
    assert float(values["rss_mb"]) > 10
    for key in ("latency_ms_p95", "frame_age_s", "frames_dropped", "cpu_temp_c", "model_id",
                "memory_fact_count", "tasks_dropped"):
        assert key in values


def test_configure_fails_clearly_when_the_model_cannot_load(ros, tmp_path):
    bad = tmp_path / "no_such_model"
    node = SelectorProcess(tmp_path, params={"model_dir": str(bad)}).start()
    try:
        ros.attach(node.ns)
        assert ros.transition("configure") is False
        assert ros.state() == "unconfigured"
        assert node.alive()
        log = node.log()
        assert "configure failed" in log
        if have_runtime():
            assert str(bad) in log, log          # the message names what could not load
        # still answers, and says why it cannot act
        assert "configure it first" in ros.memory_edit("k", "fact").message
    finally:
        node.stop()


def test_ctrl_c_stops_the_node_quietly(ros, tmp_path):
    node = SelectorProcess(tmp_path).start()
    ros.attach(node.ns)
    assert ros.state() == "unconfigured"
    code = node.stop(signal.SIGINT)
    assert code == 0, node.log()
    assert "Traceback" not in node.log()


@pytest.mark.skipif(not HAVE_MODEL, reason=NO_MODEL_REASON)
def test_autostart_configures_and_activates_without_a_lifecycle_manager(ros, tmp_path):
    node = SelectorProcess(tmp_path, params={"autostart": True}).start()
    try:
        ros.attach(node.ns)
        ros.wait_for(lambda: _state(ros) == "active", timeout=60, what="autostart to activate")
    finally:
        node.stop()


def _state(ros):
    try:
        return ros.state(timeout=5)   # polled: a short try, so one lost answer is retried
    except TimeoutError:
        return None
