"""The robot_selector lifecycle node: camera + task in, RobotSelection out, memory services.

Thin by design: messages become a `str` and an RGB array, the torch-free `BitGenRuntime`
answers, and the answer becomes a `RobotSelection`. What the node adds is what a robot needs
around a model (and what users of detector nodes like yolo_ros asked for):

- configure *fails* (FAILURE, clear log) when the model, token or limits cannot load;
- only the newest camera frame is kept, unconverted until a task needs it, and a frame older
  than `max_frame_age` is not used; camera QoS is a parameter and logged;
- tasks go through a bounded queue (oldest dropped with a warning) to one inference worker
  thread, while services, parameters and the camera run in callback groups of a
  multi-threaded executor, so `memory_list` or a parameter change answers while a selection
  runs. (The worker blocks on the queue itself rather than being woken through an executor
  guard condition: a task must never wait in the queue for the next one to arrive.)
- every memory change is authorised (edit token from the environment), limited, audited.

Topics (relative, so a namespace applies): in `camera/image_raw` (or `.../compressed`),
`bitgen/task` (TaskCommand), `bitgen/task_text` (std_msgs/String); out `bitgen/selection`,
`bitgen/trace` (std_msgs/String per trace piece), `/diagnostics`.
"""

from __future__ import annotations

from bitgen_ros.allocator import HeapTrimmer, limit_malloc_arenas

limit_malloc_arenas()   # before any import starts a thread: flat RSS over days (allocator.py)

import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.callback_groups import (MutuallyExclusiveCallbackGroup,  # noqa: E402
                                   ReentrantCallbackGroup)
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from bitgen_core.audit import AuditLog  # noqa: E402
from bitgen_core.auth import EditGuard  # noqa: E402
from bitgen_core.errors import BitGenError, InputError  # noqa: E402
from bitgen_core.limits import DEFAULT_LIMITS_FILE, Limits, validate_task  # noqa: E402
from bitgen_ros import qos  # noqa: E402
from bitgen_ros.buffers import BoundedTaskQueue, LatestFrameSlot  # noqa: E402
from bitgen_ros.conversions import (Task, selection_summary, selection_to_msg,  # noqa: E402
                                    task_from_command, task_from_string)
from bitgen_ros.diagnostics import (NodeStats, Snapshot, cpu_temperature_c,  # noqa: E402
                                   rss_mb, to_status)
from bitgen_ros.images import FrameDecoder  # noqa: E402
from bitgen_ros.memory_services import change_memory, edit_policy, fill_memory_list  # noqa: E402
from bitgen_ros.msg import RobotSelection, TaskCommand  # noqa: E402
from bitgen_ros.parameters import check_change, declare_all  # noqa: E402
from bitgen_ros.srv import MemoryEdit, MemoryForget, MemoryList, Select  # noqa: E402
from bitgen_ros.worker import InferenceWorker  # noqa: E402

NODE_NAME = "robot_selector"


class RobotSelectorNode(LifecycleNode):

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_all(self)
        # Inference is serial (one runtime, one KV cache, `_runtime_lock`): topic tasks run on
        # the worker thread, Select requests in their own group; everything else must stay
        # responsive while they run, hence separate groups on a MultiThreadedExecutor.
        self._select_group = MutuallyExclusiveCallbackGroup()
        self._intake_group = ReentrantCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._runtime = None
        self._runtime_lock = threading.Lock()    # one selection at a time (topic or Select)
        self._guard: EditGuard | None = None
        self._audit: AuditLog | None = None
        self._limits = Limits()
        self._slot = LatestFrameSlot()
        self._decoder = FrameDecoder(self._limits)
        self._queue: BoundedTaskQueue[Task] = BoundedTaskQueue(1)
        self._trimmer = HeapTrimmer(0.0)
        self._worker: InferenceWorker[Task] = InferenceWorker(
            self._answer, self._between_selections, self.get_logger().warning)
        self._stats = NodeStats()
        self._subs: list = []
        self._selection_pub = None
        self._trace_pub = None
        self._state = "unconfigured"

        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Services exist in every state and say why they cannot act, rather than vanishing.
        g = self._service_group
        self.create_service(MemoryEdit, "bitgen/memory_edit", self._on_memory_edit,
                            callback_group=g)
        self.create_service(MemoryForget, "bitgen/memory_forget", self._on_memory_forget,
                            callback_group=g)
        self.create_service(MemoryList, "bitgen/memory_list", self._on_memory_list,
                            callback_group=g)
        self.create_service(Select, "bitgen/select", self._on_select,
                            callback_group=self._select_group)
        # /diagnostics reports in every lifecycle state (an unconfigured node is news too).
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.p("diagnostics_period"),
                                             self._publish_diagnostics, callback_group=g)

    def p(self, name: str):
        return self.get_parameter(name).value

    # --- lifecycle ---------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            limits_file = DEFAULT_LIMITS_FILE
            self._limits = Limits.from_yaml(limits_file) if limits_file.exists() else Limits()
            self._decoder = FrameDecoder(self._limits)
            epm = self.p("edits_per_minute")
            self._guard = EditGuard.from_environment(
                read_only=self.p("read_only"),
                allow_unauthenticated=self.p("allow_unauthenticated_edits"),
                edits_per_minute=epm if epm > 0 else None, burst=self.p("edit_burst"))
            memory_path = _expand(self.p("memory_path"))
            if memory_path:   # e.g. ~/.bitgen on a fresh robot; private: facts steer robots
                Path(memory_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            audit_path = _expand(self.p("audit_log_path")) or (
                str(Path(memory_path).with_suffix(".audit.log")) if memory_path else "")
            self._audit = AuditLog(audit_path, source=f"ros:{self.get_fully_qualified_name()}") \
                if audit_path else None
            # The runtime applies the guard, the limits and the audit to every edit, so the
            # node and the `bitgen memory` CLI enforce the very same rules on the same store.
            runtime = _load_runtime(_expand(self.p("model_dir")) or None, memory_path or None,
                                    self.p("threads"), limits=self._limits,
                                    edit_guard=self._guard, audit_log=self._audit,
                                    recover_memory=True)
        except (BitGenError, OSError) as e:
            # The point of a lifecycle node: a configure that cannot load the model fails.
            log.error(f"configure failed: {e}")
            self._guard = self._audit = None
            return TransitionCallbackReturn.FAILURE
        recovery = runtime.memory.last_recovery
        if recovery:
            log.warning(f"the memory store was corrupt and has been moved aside: {recovery}; "
                        "starting with the facts that could be kept (none if unreadable)")
        with self._runtime_lock:
            self._runtime = runtime
        self._queue = BoundedTaskQueue(self.p("task_queue_size"))
        self._selection_pub = self.create_lifecycle_publisher(
            RobotSelection, "bitgen/selection", qos.selection_profile())
        self._trace_pub = self.create_lifecycle_publisher(String, "bitgen/trace",
                                                          qos.selection_profile(100))
        log.info(f"configured: model {runtime.model_id}, {len(runtime.memory.list())} memory "
                 f"facts ({memory_path or 'in RAM only: set memory_path to persist them'}), "
                 f"edits {edit_policy(self._guard)}, audit log {audit_path or 'off'}")
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        cam_qos = qos.camera_profile(self.p("camera_qos_reliability"), self.p("camera_qos_depth"))
        topic = self.p("image_topic")
        if self.p("image_transport") == "compressed":
            msg_type, topic = CompressedImage, topic.rstrip("/") + "/compressed"
        else:
            msg_type = Image
        g = self._intake_group
        self._subs = [
            self.create_subscription(msg_type, topic, self._on_frame, cam_qos, callback_group=g),
            self.create_subscription(TaskCommand, "bitgen/task", self._on_task_command,
                                     qos.task_profile(), callback_group=g),
            self.create_subscription(String, "bitgen/task_text", self._on_task_text,
                                     qos.task_profile(), callback_group=g),
        ]
        log.info(f"camera {self.resolve_topic_name(topic)} ({msg_type.__name__}) with QoS "
                 f"{qos.describe(cam_qos)}; a publisher must offer compatible QoS "
                 f"(a reliable subscriber never hears a best-effort camera)")
        log.info(f"tasks on {self.resolve_topic_name('bitgen/task')} (TaskCommand) and "
                 f"{self.resolve_topic_name('bitgen/task_text')} (String), QoS "
                 f"{qos.describe(qos.task_profile())}; answers on "
                 f"{self.resolve_topic_name('bitgen/selection')}")
        self._worker.start(self._queue)
        self._state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_subscriptions()
        self._worker.stop()
        dropped = self._queue.clear()
        if dropped:
            self.get_logger().warning(f"deactivated with {dropped} task(s) unanswered")
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "finalized"
        return super().on_shutdown(state)

    def _drop_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._slot.clear()

    def _release(self) -> None:
        self._drop_subscriptions()
        self._worker.stop()
        self._queue.clear()
        for pub in (self._selection_pub, self._trace_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._selection_pub = self._trace_pub = None
        with self._runtime_lock:
            self._runtime = None          # frees the onnxruntime sessions
        self._guard = self._audit = None

    # --- parameters --------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        configured = self._runtime is not None
        for prm in params:
            current = self.get_parameter(prm.name).value if self.has_parameter(prm.name) else None
            reason = check_change(prm.name, prm.value, configured, current)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for prm in params:
            if prm.name == "read_only" and self._guard is not None:
                self._guard.read_only = bool(prm.value)
            self.get_logger().info(f"parameter {prm.name} set to {prm.value!r}")
        return SetParametersResult(successful=True)

    # --- intake (fast: never blocks on inference) --------------------------------------
    def _on_frame(self, msg) -> None:
        self._slot.put(msg)

    def _on_task_command(self, msg: TaskCommand) -> None:
        self._enqueue(task_from_command(msg))

    def _on_task_text(self, msg: String) -> None:
        self._enqueue(task_from_string(msg, self.get_clock().now().to_msg()))

    def _enqueue(self, task: Task) -> None:
        self._stats.add("tasks_received")
        try:
            # Junk is refused here, before it can push a real command out of the queue.
            task = Task(task.header, task.task_id, validate_task(task.text, self._limits),
                        task.received)
        except InputError as e:
            self._stats.add("tasks_rejected")
            self.get_logger().warning(f"task {task.task_id} refused: {e}")
            return
        evicted = self._queue.push(task)
        if evicted is not None:
            self.get_logger().warning(
                f"inference cannot keep up: dropped the oldest queued task {evicted.task_id} "
                f"(queue of {self.p('task_queue_size')}; raise task_queue_size or publish "
                f"tasks less often)")

    # --- inference (one at a time, on the worker thread: worker.py) ---------------------
    def _between_selections(self) -> None:
        if self._trimmer.maybe_trim(self.p("heap_trim_period")):
            self.get_logger().debug(f"heap trimmed in {self._trimmer.last_ms:.1f} ms")

    def _answer(self, task: Task) -> None:
        if self._state != "active" or self._runtime is None:
            return
        image, image_note, frame_age_ms = self._latest_image()
        waited_ms = (time.monotonic() - task.received) * 1000.0
        try:
            sel, cpu_ms = self._select(task.text, image, self.p("top_k"))
        except BitGenError as e:
            self.get_logger().warning(f"task {task.task_id} not answered: {e}")
            return
        except Exception as e:  # noqa: BLE001 - one failed inference must not kill the node
            self.get_logger().error(f"task {task.task_id} failed in the runtime: "
                                    f"{type(e).__name__}: {e}")
            return
        extra = {"queue": waited_ms, "cpu": cpu_ms}
        if frame_age_ms is not None:       # how old the view of the world behind this answer is
            extra["frame_age"] = frame_age_ms
        msg = selection_to_msg(sel, task.header, task.task_id, task.text,
                               extra_latency_ms=extra)
        pub = self._selection_pub
        if pub is not None:
            pub.publish(msg)
        self.get_logger().info(f"task {task.task_id}: {selection_summary(msg)}"
                               + (f" [text only: {image_note}]" if image_note else ""))

    def _select(self, text: str, image, top_k: int):
        runtime = self._runtime
        if runtime is None:
            raise BitGenError("the model is not loaded (node not configured)")
        trace_pub = self._trace_pub if self.p("stream_trace") else None

        def on_token(piece: str) -> None:
            if trace_pub is not None:
                trace_pub.publish(String(data=piece))

        with self._runtime_lock:
            # CPU time of this thread, unlike wall time, does not grow when other processes
            # take the cores: it tells "the node got slower" from "the machine got busier".
            cpu_start = time.thread_time()
            sel = runtime.select(text, image=image, top_k=top_k,
                                 max_trace_tokens=self.p("max_trace_tokens"), on_token=on_token)
            cpu_ms = (time.thread_time() - cpu_start) * 1000.0
        self._stats.record_latency(sel.latency_ms.get("total", 0.0))
        return sel, cpu_ms

    def _latest_image(self):
        """(RGB array or None, why no image, the frame's age in ms) from the newest fresh
        camera frame."""
        if not self.p("use_image"):
            return None, "use_image is false", None
        frame, why = self._slot.take(self.p("max_frame_age"))
        if frame is None:
            if self._slot.peek() is not None:
                self._stats.add("frames_stale")
            return None, why, None
        image, error, fresh = self._decoder.decode(frame)
        if error:
            if fresh:
                self._stats.add("frames_rejected")
                self.get_logger().warning(f"camera frame refused: {error}",
                                          throttle_duration_sec=5.0)
            return None, error, None
        return image, "", frame.stamp_age_ms(self.get_clock().now().nanoseconds)

    # --- services ----------------------------------------------------------------------
    def _on_memory_edit(self, req, resp):
        ok, message, count = change_memory(self._runtime, self._state, "write", req.key,
                                           req.token, req.fact, self.get_logger())
        resp.success, resp.message, resp.fact_count = ok, message, count
        return resp

    def _on_memory_forget(self, req, resp):
        resp.success, resp.message, _ = change_memory(self._runtime, self._state, "forget",
                                                      req.key, req.token, None, self.get_logger())
        return resp

    def _on_memory_list(self, req, resp):
        return fill_memory_list(self._runtime, self._state, req.key_prefix, resp)

    def _on_select(self, req, resp):
        if self._state != "active":
            resp.success, resp.message = False, f"node is {self._state}; activate it first"
            return resp
        try:
            text = validate_task(req.task, self._limits)
            if req.use_image:
                image, error = self._decoder.decode_message(req.image)
                if error:
                    raise InputError(f"request image refused: {error}")
            else:
                image, _, _ = self._latest_image()
            top_k = req.top_k or self.p("top_k")
            sel, cpu_ms = self._select(text, image, top_k)
        except BitGenError as e:
            resp.success, resp.message = False, str(e)
            return resp
        except Exception as e:  # noqa: BLE001 - answer with the reason, keep serving
            self.get_logger().error(f"select failed in the runtime: {type(e).__name__}: {e}")
            resp.success, resp.message = False, f"runtime error: {type(e).__name__}: {e}"
            return resp
        header = resp.selection.header
        header.stamp = self.get_clock().now().to_msg()
        resp.selection = selection_to_msg(sel, header, "select", text, top_k=top_k,
                                          extra_latency_ms={"cpu": cpu_ms})
        resp.success, resp.message = True, "ok"
        return resp

    def destroy_node(self) -> None:
        self._worker.stop()
        super().destroy_node()

    # --- diagnostics -------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        runtime = self._runtime
        last, p50, p95 = self._stats.latency_percentiles()
        frame = self._slot.peek()
        snap = Snapshot(
            state=self._state, model_id=getattr(runtime, "model_id", ""),
            fact_count=len(runtime.memory.list()) if runtime is not None else 0,
            selections=self._stats.selections, last_latency_ms=last, p50_latency_ms=p50,
            p95_latency_ms=p95, frame_age_s=frame.age() if frame else None,
            frames_received=self._slot.received, frames_superseded=self._slot.superseded,
            frames_rejected=self._stats.frames_rejected, frames_stale=self._stats.frames_stale,
            tasks_received=self._stats.tasks_received, tasks_dropped=self._queue.dropped,
            tasks_rejected=self._stats.tasks_rejected, queue_length=len(self._queue),
            rss_mb=rss_mb(), cpu_temp_c=cpu_temperature_c())
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [to_status(snap, f"bitgen: {self.get_fully_qualified_name()}",
                                max_frame_age=self.p("max_frame_age"))]
        self._diag_pub.publish(arr)


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path)) if path else ""


def _load_runtime(model_dir, memory_path, threads, **options):
    try:
        from bitgen_core.runtime import BitGenRuntime
    except ImportError as e:
        raise BitGenError(f"the BitGen runtime cannot be imported ({e}); reinstall bitgen_core")
    return BitGenRuntime.load(model_dir=model_dir, memory_path=memory_path, threads=threads,
                              **options)


def main(args=None) -> None:
    from bitgen_ros import memprobe
    memprobe.start_from_environment()      # soak diagnostics, only when asked for (env)
    rclpy.init(args=args)
    node = RobotSelectorNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        if node.p("autostart"):
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass                       # Ctrl-C / SIGTERM: a quiet, clean exit
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
