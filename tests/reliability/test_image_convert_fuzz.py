"""Image / CompressedImage boundary: any fields give a correct RGB array or InputError.

Property-based (hypothesis) over width, height, step, encoding and data length, with
tracemalloc checking that nothing sized by a hostile header gets allocated; exact
conversions against numpy references with padded rows; compressed bombs refused before
decoding.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bitgen_core.errors import InputError
from bitgen_ros.image_convert import (SUPPORTED, compressed_to_rgb, image_to_rgb,
                                      rgb_to_image_fields)

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CAP_PIXELS = 64 * 64
CAP_BYTES = 64 * 64 * 4 + 4096
SMALL = 64 * 1024  # bytes: allocations of a refused frame must stay below this


def traced(fn, *args, **kwargs):
    """(result or exception, peak bytes allocated during the call)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # returned, so the test can assert on its type
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


dims = st.one_of(st.integers(0, 80), st.integers(-3, 2 ** 32 + 5),
                 st.sampled_from([2 ** 16 - 1, 2 ** 31 - 1, 2 ** 32 - 1]))
encodings = st.one_of(st.sampled_from(SUPPORTED), st.text(max_size=12),
                      st.sampled_from(["RGB8", "bayer_rggb8", "32FC1", ""]))


@FUZZ
@given(width=dims, height=dims, step=st.one_of(dims, st.integers(0, 400)), encoding=encodings,
       length=st.one_of(st.integers(0, 40_000), st.just(None)), fill=st.integers(0, 255),
       big=st.integers(0, 1))
def test_any_image_fields_give_rgb_of_declared_size_or_input_error(
        width, height, step, encoding, length, fill, big):
    if length is None and isinstance(step, int) and isinstance(height, int):
        length = max(0, min(step * height, 40_000))  # often exactly the declared size
    data = bytes([fill]) * length
    out, peak = traced(image_to_rgb, width, height, step, encoding, data, is_bigendian=big,
                       max_pixels=CAP_PIXELS, max_bytes=CAP_BYTES)
    if isinstance(out, InputError):
        assert str(out) and "\n" not in str(out)
        assert peak < SMALL, peak
        return
    assert not isinstance(out, Exception), repr(out)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable
    assert not np.shares_memory(out, np.frombuffer(data, np.uint8))
    assert width * height <= CAP_PIXELS
    # the output plus bounded temporaries, never anything sized by step*height alone
    assert peak <= 16 * width * height + SMALL, (peak, width, height, encoding)


@FUZZ
@given(data=st.one_of(st.binary(max_size=3000), st.lists(st.integers(-5, 300), max_size=300),
                      st.text(max_size=50), st.none(), st.integers()),
       width=st.integers(1, 10), height=st.integers(1, 10))
def test_any_data_object_gives_rgb_or_input_error(data, width, height):
    out, _ = traced(image_to_rgb, width, height, width * 3, "rgb8", data)
    assert isinstance(out, (InputError, np.ndarray)), repr(out)
    if isinstance(out, np.ndarray):
        assert out.shape == (height, width, 3)
        assert out.reshape(-1).tolist() == list(data)[:width * height * 3]


def test_huge_declared_frame_with_tiny_data_allocates_nothing():
    for w, h, enc in ((65535, 65535, "rgb8"), (2 ** 32 - 1, 2 ** 32 - 1, "mono16"),
                      (4096, 4096, "bgra8"), (100_000, 1, "yuv422")):
        out, peak = traced(image_to_rgb, w, h, w * 4, enc, b"\x00" * 100)
        assert isinstance(out, InputError) and peak < SMALL, (w, h, enc, out, peak)
    # within the default caps but with too little data: refused by the length check
    out, peak = traced(image_to_rgb, 4000, 4000, 12000, "rgb8", b"\x00" * 100)
    assert isinstance(out, InputError) and "truncated" in str(out) and peak < SMALL


@pytest.mark.parametrize("fields, message", [
    (dict(width=0, height=5, step=0), "zero size"),
    (dict(width=4, height=2, step=11), "step 11 is less than width x bytes per pixel = 12"),
    (dict(width=4, height=2, step=12, data=b"\x00" * 23), "needs 24; the frame is truncated"),
    (dict(encoding="bayer_rggb8"), "encoding 'bayer_rggb8' is not supported"),
    (dict(width=3, step=6, encoding="yuyv"), "odd"),
    (dict(width=5000, height=5000, step=15000), "the cap is 16777216"),
    (dict(width=-1), "width is negative"),
    (dict(data="not bytes"), "data must be bytes-like"),
])
def test_malformed_images_get_clear_messages(fields, message):
    args = dict(width=4, height=2, step=12, encoding="rgb8", data=b"\x00" * 24) | fields
    with pytest.raises(InputError, match=message):
        image_to_rgb(args.pop("width"), args.pop("height"), args.pop("step"),
                     args.pop("encoding"), args.pop("data"))


# --- exact conversions against numpy references ------------------------------------------------

def _pack(pixels: np.ndarray, pad: int, rng) -> tuple[bytes, int]:
    """Rows of `pixels` (HxWxC uint8) with `pad` garbage bytes after each row."""
    h = pixels.shape[0]
    rows = pixels.reshape(h, -1)
    garbage = rng.integers(0, 256, size=(h, pad), dtype=np.uint8)
    return np.concatenate([rows, garbage], axis=1).tobytes(), rows.shape[1] + pad


@FUZZ
@given(h=st.integers(1, 12), w=st.integers(1, 12), pad=st.integers(0, 9),
       enc=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1"]),
       big=st.integers(0, 1), seed=st.integers(0, 2 ** 32 - 1),
       drop_last_pad=st.booleans())
def test_valid_images_convert_exactly(h, w, pad, enc, big, seed, drop_last_pad):
    rng = np.random.default_rng(seed)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(enc, 2)
    px = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    data, step = _pack(px, pad, rng)
    if drop_last_pad and pad:
        data = data[:-pad]  # the last row's padding is optional
    out = image_to_rgb(w, h, step, enc, data, is_bigendian=big)

    if enc == "rgb8":
        ref = px
    elif enc == "bgr8":
        ref = px[..., [2, 1, 0]]
    elif enc == "rgba8":
        ref = px[..., [0, 1, 2]]
    elif enc == "bgra8":
        ref = px[..., [2, 1, 0]]
    elif enc == "mono8":
        ref = np.repeat(px, 3, axis=2)
    else:
        values = px.reshape(h, w * 2).copy().view(">u2" if big else "<u2").astype(np.int64)
        if enc == "mono16":
            gray = values >> 8
        else:
            span = max(values.max() - values.min(), 1)
            gray = (values - values.min()) * 255 // span
        ref = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(out, ref)


def _yuv_reference(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Float BT.601 studio range; the integer converter must agree within 1."""
    c, d, e = y.astype(float) - 16, u.astype(float) - 128, v.astype(float) - 128
    rgb = np.stack([1.164383 * c + 1.596027 * e,
                    1.164383 * c - 0.391762 * d - 0.812968 * e,
                    1.164383 * c + 2.017232 * d], axis=-1)
    return np.clip(np.round(rgb), 0, 255)


@pytest.mark.parametrize("enc", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_matches_bt601_reference(enc):
    rng = np.random.default_rng(7)
    h, w, pad = 5, 8, 3
    y = rng.integers(16, 236, size=(h, w), dtype=np.uint8)
    u = rng.integers(16, 241, size=(h, w // 2), dtype=np.uint8)
    v = rng.integers(16, 241, size=(h, w // 2), dtype=np.uint8)
    if enc in ("yuv422", "uyvy"):  # U Y0 V Y1; the yuy2 family is Y0 U Y1 V
        quads = np.stack([u, y[:, 0::2], v, y[:, 1::2]], axis=-1)
    else:
        quads = np.stack([y[:, 0::2], u, y[:, 1::2], v], axis=-1)
    data, step = _pack(quads.reshape(h, w * 2, 1), pad, rng)
    out = image_to_rgb(w, h, step, enc, data)
    ref = _yuv_reference(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    assert np.abs(out.astype(int) - ref).max() <= 1
    uyvy = enc in ("yuv422", "uyvy")
    white = image_to_rgb(2, 1, 4, enc, bytes([128, 235] * 2 if uyvy else [235, 128] * 2))
    black = image_to_rgb(2, 1, 4, enc, bytes([128, 16] * 2 if uyvy else [16, 128] * 2))
    assert (white == 255).all() and (black == 0).all()


@pytest.mark.parametrize("enc, bpp", [("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("bgra8", 4),
                                      ("mono8", 1), ("mono16", 2), ("16UC1", 2), ("yuv422", 2),
                                      ("yuyv", 2)])
def test_camera_sized_padded_frames_convert_within_memory_bound(enc, bpp):
    rng = np.random.default_rng(0)
    h, w = 720, 1280
    raw = rng.integers(0, 256, size=(h, w * bpp, 1), dtype=np.uint8)
    data, step = _pack(raw, 64, rng)
    out, peak = traced(image_to_rgb, w, h, step, enc, data)
    assert out.shape == (h, w, 3)
    if enc == "bgr8":
        np.testing.assert_array_equal(out, raw.reshape(h, w, 3)[..., ::-1])
    # the output, plus at most 8 bytes per pixel (16-bit depth) or one bounded row block
    assert peak <= out.nbytes + 8 * h * w + 4 * 1024 * 1024, peak


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_publisher_fields_round_trip(enc):
    arr = np.random.default_rng(3).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    fields = rgb_to_image_fields(arr, enc)
    assert fields["step"] == 9 * (4 if enc.endswith("a8") else 3) and fields["encoding"] == enc
    np.testing.assert_array_equal(image_to_rgb(**fields), arr)
    assert len(fields["data"]) == fields["step"] * fields["height"]


def test_publisher_mono8_and_bad_arrays():
    arr = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)
    fields = rgb_to_image_fields(arr, "mono8")
    assert bytes(fields["data"]) == bytes([255, 0, 76]) and fields["step"] == 3
    with pytest.raises(InputError):
        rgb_to_image_fields(arr.astype(np.float32))
    with pytest.raises(InputError):
        rgb_to_image_fields(arr[..., :2])
    with pytest.raises(InputError):
        rgb_to_image_fields(arr, "yuv422")


# --- CompressedImage ----------------------------------------------------------------------

def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + valid IHDR declaring width x height, and a tiny IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@FUZZ
@given(st.one_of(st.binary(max_size=2000),
                 st.binary(max_size=500).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
                 st.binary(max_size=500).map(lambda b: b"\xff\xd8\xff" + b)),
       st.sampled_from(["jpeg", "png", "", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth"]))
def test_random_compressed_bytes_give_input_error(data, fmt):
    out, peak = traced(compressed_to_rgb, fmt, data, max_pixels=CAP_PIXELS)
    assert isinstance(out, (InputError, np.ndarray)), repr(out)
    if isinstance(out, np.ndarray):  # only if the bytes happen to be a valid tiny image
        assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] * out.shape[1] <= CAP_PIXELS
    assert peak < 1024 * 1024, peak


def test_real_png_and_jpeg_decode():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(compressed_to_rgb("png", _encode(arr, "PNG")), arr)
    smooth = np.zeros((24, 32, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 32, dtype=np.uint8)
    smooth[..., 2] = 200
    out = compressed_to_rgb("jpeg", _encode(smooth, "JPEG", quality=95))
    assert out.shape == (24, 32, 3) and np.abs(out.astype(int) - smooth).mean() < 3
    gray_png = _encode(arr[..., 0], "PNG")  # mode L -> RGB
    np.testing.assert_array_equal(compressed_to_rgb("png", bytearray(gray_png)),
                                  np.repeat(arr[..., :1], 3, axis=2))


def test_truncated_jpeg_is_an_input_error():
    arr = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = _encode(arr, "JPEG")
    with pytest.raises(InputError, match="truncated or corrupt"):
        compressed_to_rgb("jpeg", data[: len(data) // 2])


@pytest.mark.parametrize("w, h", [(5000, 5000), (100_000, 100_000), (2 ** 31 - 1, 2 ** 31 - 1)])
def test_png_declaring_a_huge_size_is_refused_before_decoding(w, h):
    data = _png_header_only(w, h)
    assert len(data) < 200
    out, peak = traced(compressed_to_rgb, "png", data)
    assert isinstance(out, InputError), repr(out)
    assert "before decoding" in str(out) or "header unreadable" in str(out)
    assert peak < 1024 * 1024, peak


def test_compressed_caps_and_depth_format():
    with pytest.raises(InputError, match="empty"):
        compressed_to_rgb("png", b"")
    with pytest.raises(InputError, match="over the cap"):
        compressed_to_rgb("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, max_bytes=1000)
    with pytest.raises(InputError, match="compressedDepth"):
        compressed_to_rgb("16UC1; compressedDepth png", _png_header_only(4, 4))
    with pytest.raises(InputError, match="neither PNG nor JPEG"):
        compressed_to_rgb("jpeg", b"GIF89a" + b"\x00" * 40)


def test_real_sensor_msgs_round_trip_where_ros_is_installed():
    msgs = pytest.importorskip("sensor_msgs.msg")
    arr = np.random.default_rng(5).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    for enc in ("rgb8", "bgr8", "bgra8"):
        msg = msgs.Image(**rgb_to_image_fields(arr, enc))
        out = image_to_rgb(msg.width, msg.height, msg.step, msg.encoding, msg.data,
                           is_bigendian=msg.is_bigendian)
        np.testing.assert_array_equal(out, arr)
    cmsg = msgs.CompressedImage(format="png", data=_encode(arr, "PNG"))
    np.testing.assert_array_equal(compressed_to_rgb(cmsg.format, cmsg.data), arr)


@pytest.mark.parametrize("encoding,bpp", [("rgba8", 4), ("bgra8", 4), ("bgr8", 3), ("rgb8", 3)])
@pytest.mark.parametrize("width,height", [(1, 1), (1, 3), (2, 2)])
def test_output_is_an_owned_writeable_copy_even_when_the_slice_is_contiguous(encoding, bpp,
                                                                            width, height):
    # regression: a 1-pixel-wide rgba8 frame came back as a read-only view of the message
    data = bytes(range(width * height * bpp))
    out = image_to_rgb(width, height, width * bpp, encoding, data)
    assert out.shape == (height, width, 3)
    assert out.flags.writeable and out.flags.c_contiguous   # the message view is read-only
