"""The robot selector's parts that need no model and no DDS: buffers, QoS, parameters,
diagnostics, frame decoding, message conversion, the task list and the frame sources."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from bitgen_core.limits import Limits  # noqa: E402
from bitgen_ros import parameters, qos  # noqa: E402
from bitgen_ros.buffers import BoundedTaskQueue, LatestFrameSlot  # noqa: E402
from bitgen_ros.conversions import (selection_summary, selection_to_msg,  # noqa: E402
                                    task_from_command, task_from_string)
from bitgen_ros.diagnostics import (NodeStats, Snapshot, cpu_temperature_c,  # noqa: E402
                                    rss_mb, to_status)
from bitgen_ros.image_convert import rgb_to_image_fields  # noqa: E402
from bitgen_ros.images import FrameDecoder  # noqa: E402


# --- buffers ----------------------------------------------------------------------------
def test_frame_slot_keeps_only_the_newest_frame_and_counts_unused_ones():
    slot = LatestFrameSlot()
    for i in range(5):
        slot.put(f"frame{i}", received=100.0 + i)
    frame, why = slot.take(max_age=1.0, now=104.5)
    assert frame.msg == "frame4" and why == ""
    assert slot.received == 5 and slot.superseded == 4
    slot.put("frame5", received=105.0)          # frame4 was used: not counted as superseded
    assert slot.superseded == 4


def test_frame_slot_refuses_a_frame_older_than_max_frame_age():
    slot = LatestFrameSlot()
    assert slot.take(1.0)[0] is None and "no camera frame" in slot.take(1.0)[1]
    slot.put("old", received=10.0)
    frame, why = slot.take(max_age=0.5, now=11.0)
    assert frame is None and "1.00 s old" in why and "max_frame_age 0.5" in why


def test_task_queue_is_bounded_and_drops_the_oldest():
    q = BoundedTaskQueue(2)
    assert q.push("a") is None and q.push("b") is None
    assert q.push("c") == "a"
    assert [q.pop(), q.pop(), q.pop()] == ["b", "c", None]
    assert q.dropped == 1 and q.pushed == 3
    with pytest.raises(ValueError):
        BoundedTaskQueue(0)


def test_task_queue_get_blocks_until_a_push_and_wakes_for_shutdown():
    import threading
    import time
    q = BoundedTaskQueue(4)
    t0 = time.monotonic()
    assert q.get(timeout=0.1) is None and time.monotonic() - t0 >= 0.09   # timed out, empty
    got = []
    worker = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    worker.start()
    time.sleep(0.1)
    q.push("task")                    # one push, no second task needed to wake the worker
    worker.join(5)
    assert got == ["task"] and not worker.is_alive()
    worker = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    worker.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    q.wake_all()                      # shutdown: the blocked worker returns at once
    worker.join(5)
    assert got == ["task", None] and time.monotonic() - t0 < 5


# --- QoS --------------------------------------------------------------------------------
def test_camera_qos_defaults_to_sensor_data_best_effort_depth_one():
    from rclpy.qos import ReliabilityPolicy
    prof = qos.camera_profile()
    assert prof.reliability == ReliabilityPolicy.BEST_EFFORT and prof.depth == 1
    assert qos.describe(prof) == ("reliability=best_effort durability=volatile "
                                  "history=keep_last depth=1")
    assert qos.camera_profile("reliable", 3).reliability == ReliabilityPolicy.RELIABLE


def test_qos_profile_refuses_unknown_reliability_and_bad_depth():
    with pytest.raises(ValueError, match="reliability"):
        qos.profile("sometimes", 1)
    with pytest.raises(ValueError, match="depth"):
        qos.profile("reliable", 0)


# --- parameters -------------------------------------------------------------------------
def test_live_parameters_are_exactly_the_ones_the_issue_names_plus_switches():
    assert {"top_k", "max_trace_tokens", "max_frame_age", "use_image"} <= parameters.LIVE
    assert "model_dir" not in parameters.LIVE and "image_topic" not in parameters.LIVE


def test_configure_time_parameters_are_refused_while_configured_with_a_reason():
    why = parameters.check_change("image_topic", "cam", configured=True)
    assert "read on configure" in why and "deactivate" in why
    assert parameters.check_change("image_topic", "cam", configured=False) == ""
    assert parameters.check_change("top_k", 5, configured=True) == ""


def test_parameter_values_are_validated_with_reasons():
    assert "must be one of" in parameters.check_change("image_transport", "h264", False)
    assert "1..64" in parameters.check_change("top_k", 0, True)
    assert "0.01..3600" in parameters.check_change("max_frame_age", 0.0, True)
    assert "fixed" in parameters.check_change("allow_unauthenticated_edits", True, False)
    assert parameters.check_change("unknown_other_param", 1, True) == ""


def test_read_only_switches_on_live_but_never_off():
    assert parameters.check_change("read_only", True, True, current=False) == ""
    assert "not off" in parameters.check_change("read_only", False, True, current=True)


def test_descriptors_carry_ranges_and_descriptions():
    d = parameters.descriptor(parameters.BY_NAME["top_k"])
    assert d.integer_range[0].from_value == 1 and d.integer_range[0].to_value == 64
    d = parameters.descriptor(parameters.BY_NAME["max_frame_age"])
    assert d.floating_point_range[0].from_value == pytest.approx(0.01)
    assert all(s.description for s in parameters.SPECS)
    table = parameters.markdown_table()
    assert all(f"`{s.name}`" in table for s in parameters.SPECS)


def test_shipped_params_file_sets_only_declared_parameters():
    import yaml
    from bitgen_ros.paths import config_file
    data = yaml.safe_load(config_file("robot_selector.yaml").read_text())
    selector = data["/**/robot_selector"]["ros__parameters"]
    assert set(selector) <= set(parameters.BY_NAME), set(selector) - set(parameters.BY_NAME)
    for name, value in selector.items():
        spec = parameters.BY_NAME[name]
        assert type(value) is type(spec.default), name   # rclpy refuses a type change
        assert parameters.check_change(name, value, configured=False) == "" or spec.fixed


# --- diagnostics ------------------------------------------------------------------------
def test_cpu_temperature_reads_the_hottest_cpu_zone(tmp_path):
    for i, (kind, milli) in enumerate([("cpu-thermal", 48500), ("battery", 90000),
                                       ("soc_thermal", 51000)]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{milli}\n")
    assert cpu_temperature_c(str(tmp_path)) == pytest.approx(51.0)
    assert cpu_temperature_c(str(tmp_path / "missing")) is None


def _snapshot(**over) -> Snapshot:
    base = dict(state="active", model_id="m1", fact_count=2, selections=3,
                last_latency_ms=40.0, p50_latency_ms=38.0, p95_latency_ms=55.0, frame_age_s=0.1,
                frames_received=90, frames_superseded=80, frames_rejected=1, frames_stale=0,
                tasks_received=3, tasks_dropped=0, tasks_rejected=0, queue_length=0,
                rss_mb=rss_mb(), cpu_temp_c=None)
    base.update(over)
    return Snapshot(**base)


def test_diagnostic_status_reports_every_key_and_warns_on_the_right_thing():
    from diagnostic_msgs.msg import DiagnosticStatus
    st = to_status(_snapshot(), "bitgen", max_frame_age=1.0)
    values = {kv.key: kv.value for kv in st.values}
    assert st.level == DiagnosticStatus.OK
    for key in ("latency_ms_p95", "frame_age_s", "frames_dropped", "rss_mb", "cpu_temp_c",
                "model_id", "memory_fact_count"):
        assert key in values
    assert values["frames_dropped"] == "81" and values["cpu_temp_c"] == "n/a"
    assert float(values["rss_mb"]) > 10
    assert to_status(_snapshot(state="inactive"), "b", max_frame_age=1.0).level == \
        DiagnosticStatus.WARN
    hot = to_status(_snapshot(cpu_temp_c=85.0), "b", max_frame_age=1.0)
    assert hot.level == DiagnosticStatus.WARN and "85" in hot.message
    stale = to_status(_snapshot(frame_age_s=3.0), "b", max_frame_age=1.0)
    assert "no fresh camera frame" in stale.message


def test_latency_percentiles_over_the_window():
    stats = NodeStats(window=100)
    assert stats.latency_percentiles() == (None, None, None)
    for ms in range(1, 101):
        stats.record_latency(float(ms))
    last, p50, p95 = stats.latency_percentiles()
    assert last == 100.0 and p50 in (50.0, 51.0) and p95 in (95.0, 96.0)
    assert stats.selections == 100


# --- frames -----------------------------------------------------------------------------
def _image_msg(rgb, publish_as="rgb8", **override):
    from sensor_msgs.msg import Image
    fields = rgb_to_image_fields(rgb, publish_as)
    fields.update(override)
    return Image(**fields)


def test_frame_decoder_honours_encoding_and_decodes_each_frame_once():
    from bitgen_ros.buffers import Frame
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    dec = FrameDecoder(Limits())
    frame = Frame(_image_msg(rgb, publish_as="bgr8"), 0.0)
    out, err, fresh = dec.decode(frame)
    assert err == "" and fresh and np.array_equal(out, rgb)
    out2, _, fresh2 = dec.decode(frame)
    assert out2 is out and not fresh2


def test_frame_decoder_reports_malformed_frames_as_errors_not_exceptions():
    from bitgen_ros.buffers import Frame
    rgb = np.zeros((4, 4, 3), np.uint8)
    dec = FrameDecoder(Limits())
    for msg, expect in [(_image_msg(rgb, step=5), "step"),
                        (_image_msg(rgb, height=400), "truncated"),
                        (_image_msg(rgb, encoding="weird16"), "encoding"),
                        (_image_msg(rgb, width=0), "zero size")]:
        out, err, fresh = dec.decode(Frame(msg, 0.0))
        assert out is None and fresh and expect in err.lower(), err


# --- messages ---------------------------------------------------------------------------
def test_task_from_command_keeps_the_callers_header_and_id():
    from bitgen_ros.msg import TaskCommand
    cmd = TaskCommand(id="t-9", text="inspect the hull")
    cmd.header.stamp.sec, cmd.header.frame_id = 1234, "base_link"
    task = task_from_command(cmd)
    assert (task.task_id, task.text, task.header.stamp.sec, task.header.frame_id) == \
        ("t-9", "inspect the hull", 1234, "base_link")
    assert task_from_command(TaskCommand(text="x")).task_id.startswith("task-")


def test_task_from_string_is_stamped_now_and_gets_an_id():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import String
    a = task_from_string(String(data="go"), Time(sec=77))
    b = task_from_string(String(data="go"), Time(sec=78))
    assert a.header.stamp.sec == 77 and a.task_id != b.task_id


def test_selection_to_msg_carries_top_k_latency_and_memory_keys():
    from std_msgs.msg import Header
    sel = types.SimpleNamespace(
        robots=["drone", "wheeled", "legged", "humanoid", "underwater"],
        confidences=[0.9, 0.5, 0.4, 0.2, 0.1], top_k=3, reasoning="aerial -> drone",
        latency_ms={"vision": 5.0, "total": 42.0}, memory_keys_used=["k1"], model_id="m-1")
    header = Header(frame_id="cam")
    header.stamp.sec = 5
    msg = selection_to_msg(sel, header, "t1", "fly", extra_latency_ms={"queue": 1.5})
    assert msg.header.stamp.sec == 5 and msg.header.frame_id == "cam"
    assert list(msg.robots) == ["drone", "wheeled", "legged"]
    assert list(msg.confidences) == pytest.approx([0.9, 0.5, 0.4])
    assert dict(zip(msg.latency_stages, msg.latency_ms)) == {"vision": 5.0, "total": 42.0,
                                                             "queue": 1.5}
    assert list(msg.memory_keys_used) == ["k1"] and msg.model_id == "m-1"
    assert len(selection_to_msg(sel, header, "t1", "fly", top_k=1).robots) == 1
    assert selection_summary(msg) == "drone 0.90, wheeled 0.50, legged 0.40 (42 ms)"


# --- sample tasks -----------------------------------------------------------------------
def test_task_lists_load_from_yaml_and_jsonl_with_clear_errors(tmp_path):
    from bitgen_ros.paths import config_file
    from bitgen_ros.task_publisher import load_tasks
    shipped = load_tasks(config_file("sample_tasks.yaml"))
    assert len(shipped) >= 5 and all(i and t for i, t in shipped)
    jl = tmp_path / "t.jsonl"
    jl.write_text(json.dumps({"id": "a", "task": "fly"}) + "\n\n" + json.dumps({"text": "swim"}))
    assert load_tasks(jl) == [("a", "fly"), ("task-2", "swim")]
    y = tmp_path / "t.yaml"
    y.write_text("- just text\n")
    assert load_tasks(y) == [("task-1", "just text")]
    y.write_text("tasks:\n  - {id: x}\n")
    with pytest.raises(ValueError, match="entry 1 has no task text"):
        load_tasks(y)
    jl.write_text("{broken\n")
    with pytest.raises(ValueError, match=":1: not JSON"):
        load_tasks(jl)


# --- frame sources ----------------------------------------------------------------------
def test_generated_frames_hold_each_scene_then_move_to_the_next_family():
    from bitgen_ros.scene_source import generated_frames
    frames = generated_frames(["aerial", "underwater"], frames_per_scene=3)
    got = [next(frames) for _ in range(6)]
    assert all(f.shape == (224, 224, 3) and f.dtype == np.uint8 for f in got)
    assert got[0] is got[2] and got[3] is got[5] and not np.array_equal(got[0], got[3])
    with pytest.raises(ValueError, match="unknown scene families"):
        next(generated_frames(["moon"], 1))


def test_folder_frames_play_images_in_name_order(tmp_path):
    from PIL import Image as PILImage
    from bitgen_ros.scene_source import folder_frames
    for i, value in enumerate((10, 200)):
        PILImage.fromarray(np.full((5, 7, 3), value, np.uint8)).save(tmp_path / f"{i}.png")
    frames = list(folder_frames(str(tmp_path), loop=False))
    assert [int(f[0, 0, 0]) for f in frames] == [10, 200] and frames[0].shape == (5, 7, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        next(folder_frames(str(empty)))


def test_video_frames_come_out_as_rgb(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless not installed")
    from bitgen_ros.scene_source import opencv_frames
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    red_bgr = np.zeros((24, 32, 3), np.uint8)
    red_bgr[..., 2] = 220
    for _ in range(4):
        writer.write(red_bgr)
    writer.release()
    frames = list(opencv_frames(path, loop=False))
    assert len(frames) == 4 and frames[0].shape == (24, 32, 3)
    assert frames[0][..., 0].mean() > 180 and frames[0][..., 2].mean() < 40   # red in RGB
    with pytest.raises(ValueError, match="cannot open"):
        next(opencv_frames(str(tmp_path / "missing.avi")))


def test_readme_parameter_table_is_the_generated_one():
    from ros_node_harness import REPO
    readme = (REPO / "README.md").read_text()
    assert parameters.markdown_table() in readme, (
        "README's parameter table is stale; paste bitgen_ros.parameters.markdown_table()")
