"""image_preprocess.preprocess: the table-lookup normalisation gives exactly the float32
arithmetic (v/255 - mean)/std for every pixel value, channel-first, for both normalisations;
frames are resized (bilinear) to size x size, RGBA loses its alpha, bad frames are refused."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bitgen_core.image_preprocess import (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, IMAGENET_MEAN,
                                          IMAGENET_STD, preprocess)


def _arithmetic(rgb, mean, std):
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@pytest.mark.parametrize("mean,std", [(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD), (IMAGENET_MEAN, IMAGENET_STD)])
def test_lookup_equals_the_float_arithmetic_for_every_value(mean, std):
    every = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1)[:16, :, :1]
    rgb = np.concatenate([every, 255 - every, (every * 7) % 256], -1).astype(np.uint8)   # (16, 256, 3)
    rgb = np.ascontiguousarray(np.tile(rgb, (16, 1, 1))[:256])                          # all values per channel
    out = preprocess(rgb, 256, mean, std)
    assert out.dtype == np.float32 and out.shape == (3, 256, 256) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _arithmetic(rgb, mean, std))


def test_frames_are_resized_bilinear_and_rgba_drops_alpha():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)
    out = preprocess(frame, 32)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(frame[..., :3])).resize((32, 32), Image.BILINEAR, reducing_gap=1.0))
    np.testing.assert_array_equal(out, _arithmetic(resized, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD))


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), [[0, 0, 0]]])
def test_bad_frames_are_refused(bad):
    with pytest.raises(ValueError):
        preprocess(bad, 32)
