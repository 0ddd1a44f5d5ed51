"""Camera messages -> RGB arrays for the runtime, decoded lazily and once per frame.

At 30 FPS and a few tasks per second most frames are never looked at, so the node stores
messages as they come and decodes only the frame a task actually uses (a JPEG decode is
milliseconds; doing it 30 times a second would be most of a Pi core). Tasks that share a
frame share its decode, and a malformed frame is reported once, not once per task.
The decoding rules (encodings, `step`, size caps) are `image_convert`'s.
"""

from __future__ import annotations

import threading

import numpy as np

from bitgen_core.errors import InputError
from bitgen_core.limits import Limits
from bitgen_ros import image_convert
from bitgen_ros.buffers import Frame


def message_to_rgb(msg, limits: Limits) -> np.ndarray:
    """A sensor_msgs Image or CompressedImage as HxWx3 uint8 RGB, or InputError."""
    if hasattr(msg, "format"):          # CompressedImage
        return image_convert.compressed_to_rgb(msg.format, msg.data,
                                               max_bytes=limits.max_compressed_bytes,
                                               max_pixels=limits.max_image_pixels)
    return image_convert.image_to_rgb(msg.width, msg.height, msg.step, msg.encoding, msg.data,
                                      is_bigendian=msg.is_bigendian,
                                      max_pixels=limits.max_image_pixels,
                                      max_bytes=limits.max_image_bytes)


class FrameDecoder:
    """Decodes a `Frame`, remembering the last result (array or error) per frame."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._last: tuple[Frame, np.ndarray | None, str] | None = None

    def decode(self, frame: Frame) -> tuple[np.ndarray | None, str, bool]:
        """(rgb or None, error or '', fresh): `fresh` is False when served from the cache."""
        with self._lock:
            if self._last is not None and self._last[0] is frame:
                return self._last[1], self._last[2], False
        image, error = self.decode_message(frame.msg)
        with self._lock:
            self._last = (frame, image, error)
        return image, error, True

    def decode_message(self, msg) -> tuple[np.ndarray | None, str]:
        try:
            return message_to_rgb(msg, self._limits), ""
        except InputError as e:
            return None, str(e)
