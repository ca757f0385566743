import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from camfleet_contract.images import (
    ImageError,
    Preprocessing,
    decode_image,
    encode_jpeg,
    preprocess,
    preprocess_batch,
    probe_image,
    thumbnail_jpeg,
)


@pytest.fixture
def photo(test_data) -> bytes:
    return next((test_data / "clothing" / "train" / "shoes").glob("*.jpg")).read_bytes()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_decode_real_photo(photo: bytes) -> None:
    fmt, w, h = probe_image(photo)
    rgb = decode_image(photo)
    assert fmt == "JPEG" and rgb.shape == (h, w, 3) and rgb.dtype == np.uint8


def test_draft_decode_is_smaller(photo: bytes) -> None:
    small = decode_image(photo, draft=(64, 64))
    assert small.shape[0] < decode_image(photo).shape[0]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: b"", "not a readable image"),
        (lambda p: b"hello world, not an image", "not a readable image"),
        (lambda p: p[: len(p) // 2], "truncated|corrupt"),
        (lambda p: p[:600] + bytes(range(256)) * 8 + p[600 + 2048 :], "corrupt|truncated"),
        (lambda p: _png_claiming(50_000, 50_000), "too large|exceeds"),
        (lambda p: b"%PDF-1.4\n" + b"0" * 100, "not a readable image"),
    ],
)
def test_bad_images_raise_clear_errors(photo: bytes, make, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        decode_image(make(photo))


def test_unsupported_format_rejected() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="ICO")
    with pytest.raises(ImageError, match="unsupported"):
        decode_image(buf.getvalue())


def test_max_pixels_limit(photo: bytes) -> None:
    with pytest.raises(ImageError, match="exceeds the limit"):
        decode_image(photo, max_pixels=1000)


def test_preprocess_shape_and_normalisation() -> None:
    spec = Preprocessing(size=224, resize=256)
    img = np.full((480, 640, 3), 255, dtype=np.uint8)
    out = preprocess(img, spec)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-6)  # (1 - 0.5) / 0.5
    assert preprocess_batch([img, img[:300]], spec).shape == (2, 3, 224, 224)
    assert preprocess(np.zeros((100, 50, 3), np.uint8), spec).min() == pytest.approx(-1.0)


def test_preprocess_centre_crop_keeps_centre() -> None:
    img = np.zeros((256, 512, 3), dtype=np.uint8)
    img[:, 192:320] = 255  # a bright vertical band in the middle
    out = preprocess(img, Preprocessing(size=128, resize=128))
    assert out[:, :, 64].mean() > 0.9 and out[:, :, 0].mean() < -0.9


def test_preprocess_of_a_bgr_frame_equals_the_rgb_one() -> None:
    # A camera frame as OpenCV decodes it (BGR) gives the model exactly the input of the same picture in RGB.
    rgb = np.random.default_rng(3).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    spec = Preprocessing(size=224, resize=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    np.testing.assert_array_equal(preprocess(bgr, spec, bgr=True), preprocess(rgb, spec))
    np.testing.assert_array_equal(preprocess_batch([bgr], spec, bgr=True), preprocess_batch([rgb], spec))
    assert encode_jpeg(bgr, bgr=True) == encode_jpeg(rgb)


def test_a_camera_frame_is_resampled_like_an_area_average(test_data) -> None:
    """A 720p frame goes 720 -> 240 (integer area pass) -> 224; that last, small step is bilinear (8x faster than
    OpenCV's non-integer area path) and stays within a fraction of a grey level of the area average. A photo that
    still needs a large step (400 -> 224) keeps the area average."""
    import cv2

    cap = cv2.VideoCapture(str(test_data / "video" / "plaza.avi"))  # the carried clip is 480 x 270
    ok, small = cap.read()
    cap.release()
    assert ok
    frame = cv2.resize(small, (1280, 720), interpolation=cv2.INTER_CUBIC)
    spec = Preprocessing(size=224, resize=224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    got = preprocess(frame, spec, bgr=True) * 255
    third = cv2.resize(frame[:, 280:1000], (240, 240), interpolation=cv2.INTER_AREA)
    area = cv2.resize(third, (224, 224), interpolation=cv2.INTER_AREA)[..., ::-1].transpose(2, 0, 1)
    assert np.abs(got - area).mean() < 0.5
    assert not np.array_equal(np.rint(got), area)  # the fast path ran

    photo = np.random.default_rng(1).integers(0, 256, (533, 400, 3), dtype=np.uint8)
    top = (533 - 400) // 2
    expected = cv2.resize(photo[top : top + 400], (224, 224), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess(photo, spec) * 255, expected, atol=1e-3)


def test_preprocess_rejects_wrong_arrays() -> None:
    with pytest.raises(ImageError, match="shape"):
        preprocess(np.zeros((10, 10), np.uint8), Preprocessing())


def test_jpeg_and_thumbnail(photo: bytes) -> None:
    rgb = decode_image(photo)
    again = decode_image(encode_jpeg(rgb, 95))
    assert again.shape == rgb.shape and np.abs(again.astype(int) - rgb).mean() < 4
    thumb = decode_image(thumbnail_jpeg(rgb, 128))
    assert max(thumb.shape[:2]) == 128
