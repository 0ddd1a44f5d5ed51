"""scene_source: a camera stand-in for demos, tests and replays, publishing sensor_msgs/Image.

Sources (parameter `source`):
- `generated`: procedurally rendered scenes (bitgen_core.data.render), cycling through
  `families`, a new scene every `scene_period` seconds — no files needed;
- `folder`: the PNG/JPEG files of `path`, in name order;
- `video`: a video file at `path` (OpenCV);
- `camera`: a V4L2 device number `device` (OpenCV).
Frames go out at `rate` Hz with best-effort QoS like a real camera driver, stamped with the
time of publication, as `encoding` (rgb8/bgr8/...) or, with `transport: compressed`, as JPEG
on `<topic>/compressed`. The frame sources are plain iterators of RGB arrays (no rclpy).
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from bitgen_ros import qos
from bitgen_ros.image_convert import rgb_to_image_fields
from bitgen_ros.node_main import run_node

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def generated_frames(families: list[str], frames_per_scene: int, seed: int = 0
                     ) -> Iterator[np.ndarray]:
    """Rendered scenes, each repeated `frames_per_scene` times (a camera watching a scene)."""
    from bitgen_core.data.render import FAMILIES, render_scene
    families = list(families) or list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown scene families {unknown}; choose from {', '.join(FAMILIES)}")
    for i in itertools.count():
        image = render_scene(families[i % len(families)], seed + i).image
        for _ in range(max(1, frames_per_scene)):
            yield image


def folder_frames(path: str, loop: bool = True) -> Iterator[np.ndarray]:
    from PIL import Image as PILImage
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
    while True:
        for f in files:
            with PILImage.open(f) as im:
                yield np.asarray(im.convert("RGB"), dtype=np.uint8)
        if not loop:
            return


def opencv_frames(target: str | int, loop: bool = True) -> Iterator[np.ndarray]:
    """Frames of a video file (str) or camera device (int) via OpenCV, as RGB."""
    try:
        import cv2
    except ImportError:
        raise RuntimeError("video and camera sources need OpenCV: "
                           "pip install opencv-python-headless") from None
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise ValueError(f"OpenCV cannot open {'camera device' if isinstance(target, int) else 'video'} "
                         f"{target}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                if loop and isinstance(target, str):
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, bgr = cap.read()
                if not ok:
                    return
            yield np.ascontiguousarray(bgr[..., ::-1])
    finally:
        cap.release()


class SceneSource(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("scene_source", **kwargs)
        d = ParameterDescriptor
        self.declare_parameters("", [
            ("source", "generated", d(description="generated | folder | video | camera")),
            ("path", "", d(description="Folder of images or video file (folder/video sources).")),
            ("device", 0, d(description="Camera device number (camera source).")),
            ("rate", 30.0, d(description="Frames per second published.")),
            ("families", Parameter.Type.STRING_ARRAY,
             d(description="Scene families to cycle (generated source); unset: all.")),
            ("scene_period", 2.0, d(description="Seconds each generated scene is shown.")),
            ("seed", 0, d(description="Seed of the first generated scene.")),
            ("loop", True, d(description="Restart a folder or video at its end.")),
            ("topic", "camera/image_raw", d(description="Image topic.")),
            ("encoding", "rgb8", d(description="rgb8, bgr8, rgba8, bgra8 or mono8.")),
            ("transport", "raw", d(description="raw (Image) or compressed (JPEG on "
                                   "<topic>/compressed).")),
            ("frame_id", "camera", d(description="header.frame_id of the frames.")),
            ("reliability", "best_effort", d(description="best_effort or reliable.")),
        ])
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        rate = float(p("rate"))
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._frames = self._open_source(p, rate)
        self._encoding, self._frame_id = p("encoding"), p("frame_id")
        self._compressed = p("transport") == "compressed"
        cam_qos = qos.profile(p("reliability"), 1)
        topic = p("topic") + ("/compressed" if self._compressed else "")
        self._pub = self.create_publisher(CompressedImage if self._compressed else Image,
                                          topic, cam_qos)
        self.published = 0
        self._timer = self.create_timer(1.0 / rate, self._tick)
        self.get_logger().info(f"publishing {p('source')} frames on "
                               f"{self.resolve_topic_name(topic)} at {rate:g} Hz, QoS "
                               f"{qos.describe(cam_qos)}")

    def _open_source(self, p, rate: float) -> Iterator[np.ndarray]:
        source = p("source")
        if source == "generated":
            families = [f for f in (p("families") or []) if f]
            return generated_frames(families, round(p("scene_period") * rate), p("seed"))
        if source == "folder":
            return folder_frames(p("path"), p("loop"))
        if source == "video":
            return opencv_frames(p("path"), p("loop"))
        if source == "camera":
            return opencv_frames(int(p("device")))
        raise ValueError(f"unknown source {source!r}: use generated, folder, video or camera")

    def _tick(self) -> None:
        frame = next(self._frames, None)
        if frame is None:
            self.get_logger().info("source exhausted; no more frames")
            self._timer.cancel()
            return
        stamp = self.get_clock().now().to_msg()
        if self._compressed:
            from PIL import Image as PILImage
            buf = io.BytesIO()
            PILImage.fromarray(frame).save(buf, format="JPEG", quality=85)
            msg = CompressedImage(format="jpeg", data=buf.getvalue())
        else:
            msg = Image(**rgb_to_image_fields(frame, self._encoding))
        msg.header.stamp = stamp
        msg.header.frame_id = self._frame_id
        self._pub.publish(msg)
        self.published += 1


def main(args=None) -> None:
    run_node("scene_source", SceneSource, args, config_errors=(ValueError, RuntimeError))


if __name__ == "__main__":
    main()
