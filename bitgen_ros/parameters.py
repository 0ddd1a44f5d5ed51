"""The robot selector's parameters: one table of names, defaults, descriptions and ranges.

The table is the single source for the node's declarations, the README's parameter table
and config/robot_selector.yaml. `LIVE` parameters change while the node runs; the others
are read on configure, so changing them is refused while the node is configured (the
reason tells the operator to deactivate and clean up first). `read_only` can never turn off
at run time, only switch on: the parameter services are as open as the memory services, and
a lock that a `ros2 param set` can undo is no lock. The edit token is deliberately NOT a parameter
(parameters are listed and dumped by anyone on the domain); it comes from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from bitgen_ros.qos import RELIABILITY


@dataclass(frozen=True)
class Spec:
    name: str
    default: Any
    description: str
    live: bool = False
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    fixed: bool = False          # read-only for the node's lifetime


SPECS: tuple[Spec, ...] = (
    Spec("model_dir", "", "Exported model directory; empty uses the shipped models/default."),
    Spec("memory_path", "", "Memory store file (facts persist across restarts, written "
         "atomically); empty keeps facts in RAM only."),
    Spec("audit_log_path", "", "Append-only audit log of memory changes and refusals; empty "
         "puts it beside memory_path (no audit log when both are empty)."),
    Spec("read_only", False, "Refuse every memory edit and forget. Can be switched on live, "
         "never off (restart with the params file changed).", live=True),
    Spec("allow_unauthenticated_edits", False, "Accept edits when no edit token is configured "
         "(BITGEN_EDIT_TOKEN / BITGEN_EDIT_TOKEN_FILE unset); only for a trusted single host.",
         fixed=True),
    Spec("edits_per_minute", 30.0, "Rate limit of memory edits and forgets; 0 disables it.",
         fixed=True, float_range=(0.0, 100000.0)),
    Spec("edit_burst", 5, "Edits allowed at once before the rate limit applies.", fixed=True,
         int_range=(1, 10000)),
    Spec("threads", 1, "onnxruntime intra-op threads.", int_range=(1, 16)),
    Spec("image_topic", "camera/image_raw", "Camera topic (relative names follow the "
         "namespace); with image_transport 'compressed' the node subscribes to "
         "<image_topic>/compressed."),
    Spec("image_transport", "raw", "'raw' (sensor_msgs/Image) or 'compressed' "
         "(sensor_msgs/CompressedImage).", choices=("raw", "compressed")),
    Spec("camera_qos_reliability", "best_effort", "Camera subscription reliability: "
         "'best_effort' (sensor data) or 'reliable'; must be compatible with the publisher.",
         choices=tuple(sorted(RELIABILITY))),
    Spec("camera_qos_depth", 1, "Camera subscription queue depth; 1 keeps only the newest frame.",
         int_range=(1, 100)),
    Spec("task_queue_size", 4, "Tasks waiting for inference; when full the oldest is dropped "
         "with a warning.", int_range=(1, 1000)),
    Spec("top_k", 3, "Robots in each RobotSelection, best first (the Select service may ask "
         "for another k).",
         live=True, int_range=(1, 64)),
    Spec("max_trace_tokens", 32, "Longest reasoning trace in tokens; 0 skips the trace.",
         live=True, int_range=(0, 512)),
    Spec("max_frame_age", 1.0, "Seconds a camera frame stays usable; an older latest frame is "
         "ignored and the task is answered from its text.", live=True,
         float_range=(0.01, 3600.0)),
    Spec("use_image", True, "Use the camera at all (false: text-only selection).", live=True),
    Spec("stream_trace", True, "Publish reasoning trace pieces on bitgen/trace as generated.",
         live=True),
    Spec("heap_trim_period", 30.0, "Seconds between returns of freed heap memory to the OS "
         "(glibc malloc_trim, on the inference thread between selections) so RSS stays flat "
         "over days; 0 disables.", live=True, float_range=(0.0, 3600.0)),
    Spec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
         float_range=(0.1, 60.0)),
    Spec("autostart", False, "Configure and activate by itself at start-up (for `ros2 run` "
         "without a lifecycle manager).", fixed=True),
)

BY_NAME = {s.name: s for s in SPECS}
LIVE = frozenset(s.name for s in SPECS if s.live)


def descriptor(spec: Spec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=spec.name, description=spec.description,
                            read_only=spec.fixed)
    if spec.int_range:
        d.type = ParameterType.PARAMETER_INTEGER
        d.integer_range = [IntegerRange(from_value=spec.int_range[0],
                                        to_value=spec.int_range[1], step=1)]
    elif spec.float_range:
        d.type = ParameterType.PARAMETER_DOUBLE
        d.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0],
                                                     to_value=spec.float_range[1], step=0.0)]
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    return d


def declare_all(node) -> None:
    node.declare_parameters("", [(s.name, s.default, descriptor(s)) for s in SPECS])


def check_change(name: str, value: Any, configured: bool, current: Any = None) -> str:
    """Why a new value is refused ('' if it is acceptable). Ranges are also enforced by rclpy."""
    spec = BY_NAME.get(name)
    if spec is None:
        return ""          # other parameters (use_sim_time...) are rclpy's business
    if name == "read_only" and current is True and value is not True:
        return "read_only can be switched on at run time but not off; restart the node"
    if spec.fixed:
        return f"{name} is fixed for the node's lifetime; set it in the params file"
    if configured and not spec.live:
        return (f"{name} is read on configure; deactivate and clean up the node, then set it "
                f"(parameters that change live: {', '.join(sorted(LIVE))})")
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.int_range and not (spec.int_range[0] <= value <= spec.int_range[1]):
        return f"{name} must be in {spec.int_range[0]}..{spec.int_range[1]}, got {value}"
    if spec.float_range and not (spec.float_range[0] <= value <= spec.float_range[1]):
        return f"{name} must be in {spec.float_range[0]}..{spec.float_range[1]}, got {value}"
    return ""


def markdown_table() -> str:
    """The README's parameter table, generated from SPECS so the two never disagree."""
    rows = ["| Parameter | Default | Live | Description |", "|---|---|---|---|"]
    for s in SPECS:
        rng = ""
        if s.int_range:
            rng = f" Range {s.int_range[0]}..{s.int_range[1]}."
        elif s.float_range:
            rng = f" Range {s.float_range[0]:g}..{s.float_range[1]:g}."
        rows.append(f"| `{s.name}` | `{s.default!r}` | {'yes' if s.live else 'no'} | "
                    f"{s.description}{rng} |")
    return "\n".join(rows)
