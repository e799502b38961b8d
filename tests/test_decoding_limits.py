"""What decoding one image may cost: JPEG scans and decoding time."""

from __future__ import annotations

import io
import time

import pytest

from shop_search.exceptions import ImageError
from shop_search.images import load_image

from .conftest import png_bytes
from .hostile_images import noisy_image, progressive_jpeg_with_repeated_scans


@pytest.fixture
def limits(settings):
    """Set SHOP_SEARCH keys for one test."""

    def set_limits(**values):
        settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, **values}

    return set_limits


def _refused(data: bytes, **options) -> tuple[ImageError, float]:
    started = time.perf_counter()
    with pytest.raises(ImageError) as info:
        load_image(data, **options)
    return info.value, time.perf_counter() - started


# --- JPEG scans -------------------------------------------------------------------


def test_a_jpeg_with_a_repeated_scan_is_refused_before_decoding():
    # Issue 11: 6000x6000 passes the pixel limit; its 1000 repeated scans
    # took 28.6 s to decode.
    error, seconds = _refused(progressive_jpeg_with_repeated_scans(6000, 1000))
    assert error.code == "image_too_complex"
    assert "MAX_JPEG_SCANS" in error.message
    assert seconds < 2  # a guard, not a benchmark: about 0.1 ms


def test_a_progressive_jpeg_still_decodes():
    image = load_image(progressive_jpeg_with_repeated_scans(3000, 0))
    assert image.size == (768, 768)
    assert image.getpixel((10, 10)) == (128, 128, 128)


def test_scans_are_counted_as_libjpeg_reads_them(limits):
    # Noise makes entropy-coded data full of stuffed 0xFF00 bytes, restart
    # markers split it, and a comment holds bytes that look like an EOI and
    # SOS markers: none of them is a scan. libjpeg's default progression for
    # a colour image has 10 scans.
    buffer = io.BytesIO()
    noisy_image(640, 480).save(
        buffer,
        format="JPEG",
        progressive=True,
        quality=95,
        restart_marker_blocks=3,
        comment=b"\xff\xd9" + b"\xff\xda\x00\x02" * 200,
    )
    data = buffer.getvalue()
    assert data.count(b"\xff\xda") > 200 and b"\xff\xd0" in data
    limits(MAX_JPEG_SCANS=10)
    assert load_image(data).size == (640, 480)
    limits(MAX_JPEG_SCANS=9)
    assert _refused(data)[0].code == "image_too_complex"


def test_a_fake_end_of_image_in_a_comment_hides_no_scans():
    data = progressive_jpeg_with_repeated_scans(500, 1000)
    data = data[:2] + b"\xff\xfe\x00\x04\xff\xd9" + data[2:]  # COM: "\xff\xd9"
    assert _refused(data)[0].code == "image_too_complex"


def test_a_jpeg_of_comments_is_refused_quickly():
    data = b"\xff\xd8" + b"\xff\xfe\x00\x02" * 2_000_000 + b"\xff\xd9"
    error, seconds = _refused(data)
    assert error.code == "image_too_complex"
    assert seconds < 2


# --- decoding time ----------------------------------------------------------------


def test_a_slow_decode_is_stopped_at_the_deadline(limits):
    data = png_bytes((10, 200, 30), (6000, 6000))  # 36 Mpx: well within products'
    started = time.perf_counter()
    load_image(data)
    full = time.perf_counter() - started
    limits(MAX_DECODE_SECONDS=0.02)
    error, stopped = _refused(data)
    assert error.code == "image_too_complex"
    assert "MAX_DECODE_SECONDS" in error.message
    assert stopped < full / 2, (stopped, full)  # stopped, not finished late
