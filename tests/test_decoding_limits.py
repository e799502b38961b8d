"""
What decoding one image may cost: JPEG scans, decoding time, the pixel limit
for shoppers' uploads, uploads decoded at once, and the memory of one decode.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from shop_search.exceptions import ImageError, SearchBusy
from shop_search.images import decode_gate, load_image

from .conftest import png_bytes
from .hostile_images import (
    flat_webp,
    noisy_image,
    progressive_jpeg_with_repeated_scans,
)


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


@pytest.mark.parametrize("upload", [False, True])
def test_a_jpeg_with_a_repeated_scan_is_refused_before_decoding(upload):
    # Issue 11: 6000x6000 passes the product limit; its 1000 repeated scans
    # took 28.6 s to decode. Uploads get a smaller one, within their limit.
    side = 3000 if upload else 6000
    error, seconds = _refused(
        progressive_jpeg_with_repeated_scans(side, 1000), upload=upload
    )
    assert error.code == "image_too_complex"
    assert "MAX_JPEG_SCANS" in error.message
    assert seconds < 2  # a guard, not a benchmark: about 0.1 ms


def test_a_progressive_jpeg_still_decodes():
    image = load_image(progressive_jpeg_with_repeated_scans(3000, 0), upload=True)
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


# --- shoppers' uploads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"progressive": True}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
    ],
)
def test_uploads_have_a_lower_pixel_limit_than_product_images(limits, fmt, options):
    limits(MAX_UPLOAD_PIXELS=100 * 100, MAX_IMAGE_PIXELS=200 * 200)
    buffer = io.BytesIO()
    Image.new("RGB", (150, 150), "red").save(buffer, format=fmt, **options)
    data = buffer.getvalue()
    assert load_image(data).size == (150, 150)
    error = _refused(data, upload=True)[0]
    assert error.code == "image_too_many_pixels"
    assert "MAX_UPLOAD_PIXELS" in error.message


def test_an_upload_waits_for_a_decode_slot_then_gets_busy(limits):
    limits(MAX_CONCURRENT_DECODES=1, DECODE_QUEUE_TIMEOUT=0.2)
    data = png_bytes("red", (50, 50))
    with decode_gate:  # another upload is being decoded
        started = time.perf_counter()
        with pytest.raises(SearchBusy):
            load_image(data, upload=True)
        assert 0.15 < time.perf_counter() - started < 2
        assert load_image(data).size == (50, 50)  # product images are not gated
    assert load_image(data, upload=True).size == (50, 50)
    assert (decode_gate.running, decode_gate.waiting) == (0, 0)


def test_an_upload_gets_the_slot_another_frees(limits):
    limits(MAX_CONCURRENT_DECODES=1, DECODE_QUEUE_TIMEOUT=5)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with decode_gate:
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    threading.Timer(0.2, release.set).start()
    try:
        image = load_image(png_bytes("red", (50, 50)), upload=True)
    finally:
        release.set()
        holder.join()
    assert image.size == (50, 50)


def test_a_refused_upload_frees_its_slot(limits):
    limits(MAX_CONCURRENT_DECODES=1, DECODE_QUEUE_TIMEOUT=0.2)
    for _ in range(3):
        _refused(b"not an image", upload=True)
    assert decode_gate.running == 0


# --- memory -----------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import sys
    from django.conf import settings
    settings.configure()
    from shop_search.images import load_image

    def peak():
        # This process's peak RSS. Not ru_maxrss: Linux keeps the parent's
        # across fork and exec, and pytest's is larger than one decode.
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    data = open(sys.argv[1], "rb").read()
    load_image(open(sys.argv[2], "rb").read(), upload=True)  # load the codec
    before = peak()
    try:
        load_image(data, upload=True)
        outcome = "decoded"
    except Exception as exc:
        outcome = getattr(exc, "code", type(exc).__name__)
    print(outcome, round(peak() - before))
    """
)


def _worst_case(fmt: str, side: int) -> bytes:
    """A side x side image in the costliest form of ``fmt`` to decode."""
    if fmt == "WEBP":  # two RGBA canvases in libwebp, a copy, the image
        return flat_webp(side)
    image = Image.new("RGB", (side, side), (10, 200, 30))
    buffer = io.BytesIO()
    if fmt == "JPEG CMYK":  # progressive: libjpeg keeps every coefficient
        image.convert("CMYK").save(buffer, format="JPEG", progressive=True)
    elif fmt == "PNG palette":  # with transparency: becomes RGBA
        image.convert("P").save(buffer, format="PNG", transparency=0)
    else:
        image.putalpha(200)
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _peak_growth(tmp_path: Path, data: bytes, warm_up: bytes) -> tuple[str, int]:
    """load_image(data, upload=True) in a fresh process: (outcome, peak RSS MB)."""
    (tmp_path / "image").write_bytes(data)
    (tmp_path / "warm-up").write_bytes(warm_up)
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, tmp_path / "image", tmp_path / "warm-up"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcome, growth = result.stdout.split()
    return outcome, int(growth)


@pytest.mark.parametrize("fmt", ["WEBP", "PNG RGBA", "PNG palette", "JPEG CMYK"])
def test_a_worst_case_upload_fits_its_share_of_the_memory_budget(tmp_path, fmt):
    # Issue 11: 8 uploads at once must add at most 400 MB to a worker. At most
    # MAX_CONCURRENT_DECODES (2) decode at once, so one may peak at 200 MB.
    from shop_search.conf import DEFAULTS

    side = int(DEFAULTS["MAX_UPLOAD_PIXELS"] ** 0.5)
    budget = 400 / DEFAULTS["MAX_CONCURRENT_DECODES"]
    outcome, growth = _peak_growth(
        tmp_path, _worst_case(fmt, side), _worst_case(fmt, 16)
    )
    assert outcome == "decoded"
    sys.stdout.write(f"\n{fmt} {side}x{side} upload: peak RSS +{growth} MB\n")
    assert growth < budget


def test_a_huge_webp_upload_is_refused_before_its_canvas_is_allocated(tmp_path):
    # Pillow's WebP decoder allocates two canvases when the file is opened,
    # before Pillow returns its size: 600 MB for 6300x6300 (issue 11).
    huge, small = flat_webp(6300, lossless=True), flat_webp(16, lossless=True)
    outcome, growth = _peak_growth(tmp_path, huge, small)
    assert outcome == "image_too_many_pixels"
    assert growth < 20


def test_a_baseline_jpeg_photo_is_decoded_small_so_it_gets_the_product_limit(limits):
    """A phone photo (baseline JPEG) costs a few MB at reduced size: shoppers
    may upload it up to the product images' limit."""
    limits(MAX_UPLOAD_PIXELS=100 * 100, MAX_IMAGE_PIXELS=200 * 200)
    buffer = io.BytesIO()
    Image.new("RGB", (150, 150), "red").save(buffer, format="JPEG")
    assert load_image(buffer.getvalue(), upload=True).size == (150, 150)
    buffer = io.BytesIO()
    Image.new("RGB", (250, 250), "red").save(buffer, format="JPEG")
    error = _refused(buffer.getvalue(), upload=True)[0]
    assert error.code == "image_too_many_pixels"
    assert "MAX_IMAGE_PIXELS" in error.message
