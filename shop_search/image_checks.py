"""
What decoding an image may cost, checked before its pixels are decoded.

:func:`~shop_search.images.load_image` calls these in order: the bytes are
read (:func:`read_bytes`, at most ``MAX_IMAGE_BYTES`` and one more), checked
for their size, for a JPEG's scans and for a WebP's declared canvas
(:func:`check_bytes`); the image is opened with a decoding deadline
(:func:`open_with_deadline`) and its header checked for its format, aspect
ratio and pixels (:func:`check_header`). Shoppers' uploads also wait for a
slot in :data:`decode_gate`. Every refusal raises
:class:`~shop_search.exceptions.ImageError` with a specific ``code``.
"""

from __future__ import annotations

import io
import re
import threading
import time
from typing import IO, Any

from PIL import Image

from .conf import shop_search_settings
from .exceptions import ImageError, SearchBusy

__all__ = [
    "read_bytes",
    "check_bytes",
    "open_with_deadline",
    "check_header",
    "decode_gate",
    "DecodeTimeout",
    "ALLOWED_FORMATS",
    "MAX_ASPECT",
]

#: Pillow format names accepted. HEIF/AVIF are added when their plugin is present.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "MPO", "HEIF", "AVIF"})

# A 10000x1 "image" would make CLIP's processor allocate gigabytes.
MAX_ASPECT = 10

# Compressed bytes handed to the decoder per call (Pillow's default is 64 KiB).
# The decoding deadline is checked between calls, and 16 KiB of a zlib bomb
# is at most 16 MB of pixels, so a decode stops soon after its deadline.
_READ_BLOCK = 16 * 1024

# A JPEG marker: 0xFF, then anything but a stuffed zero, a restart marker
# (RST0-7) or another 0xFF (fill).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

# Real photos have a few dozen marker segments; walking millions of 4-byte
# comment segments would cost seconds of Python.
_MAX_JPEG_MARKERS = 10_000


class _DecodeGate:
    """
    Bounds the shoppers' images decoded at once in this process
    (``MAX_CONCURRENT_DECODES``): decoding a large image costs tens of MB
    for a moment, so a burst of uploads must queue, not add up. A decode
    waits at most ``DECODE_QUEUE_TIMEOUT`` seconds for a slot, then raises
    :class:`SearchBusy` (the API answers 503 with Retry-After).
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.running = self.waiting = 0

    def __enter__(self) -> None:
        limit = max(1, int(shop_search_settings.MAX_CONCURRENT_DECODES))
        timeout = float(shop_search_settings.DECODE_QUEUE_TIMEOUT)
        with self._lock:
            self.waiting += 1
            try:
                ready = self._lock.wait_for(lambda: self.running < limit, timeout)
            finally:
                self.waiting -= 1
            if not ready:
                raise SearchBusy(
                    "Too many images are being decoded at once; try again in a "
                    "few seconds."
                )
            self.running += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self.running -= 1
            self._lock.notify_all()


decode_gate = _DecodeGate()


class DecodeTimeout(Exception):
    """Raised from inside Pillow's decoding loop once the deadline passes."""


class _DeadlineReader(io.BytesIO):
    """
    The image's bytes, as the file Pillow decodes from. Pillow's decoders
    read compressed data a block at a time and decode each block before
    reading the next; past the deadline, the next read raises, which stops
    the decode however slow each block's pixels are to produce. (WebP and
    AVIF decode in one call, bounded by their pixel limit instead.)
    """

    def __init__(self, data: bytes, seconds: float | None) -> None:
        super().__init__(data)
        # CPU time of the decoding thread, not the wall clock: on a busy
        # server an ordinary photo must not be refused for waiting its turn
        # for a core.
        self._deadline = time.thread_time() + seconds if seconds else None

    def read(self, size: int | None = -1) -> bytes:
        if self._deadline is not None and time.thread_time() > self._deadline:
            raise DecodeTimeout
        return super().read(size)


def open_with_deadline(data: bytes, seconds: float | None) -> Image.Image:
    """
    ``Image.open`` on ``data``; decoding it raises :class:`DecodeTimeout`
    once the decoding thread has used ``seconds`` of CPU (None or 0: no
    deadline). Pillow's own errors propagate.
    """
    image = Image.open(_DeadlineReader(data, seconds))
    image.decodermaxblock = _READ_BLOCK
    return image


def read_bytes(source: Any) -> bytes:
    """
    The bytes of ``source`` (bytes, a path, a Django ``FieldFile`` or a file
    object), at most ``MAX_IMAGE_BYTES`` and one more, so that
    :func:`check_bytes` can tell a file over the limit.
    """
    if isinstance(source, bytes):
        return source
    max_bytes = shop_search_settings.MAX_IMAGE_BYTES
    try:
        if isinstance(source, str) or hasattr(source, "__fspath__"):
            with open(source, "rb") as fh:
                return fh.read(max_bytes + 1)
        if hasattr(source, "open") and hasattr(source, "storage"):
            # A FieldFile: open it through its storage (local disk, S3, ...).
            with source.open("rb") as fh:
                return fh.read(max_bytes + 1)
        fh: IO[bytes] = source
        if hasattr(fh, "seek"):
            fh.seek(0)
        return fh.read(max_bytes + 1)
    except (OSError, ValueError) as exc:
        raise ImageError(
            f"The image file could not be read: {exc}", code="image_unreadable"
        ) from exc


def check_bytes(data: bytes, limit: str) -> None:
    """
    Refuse, before Pillow sees them, bytes that are empty, over
    ``MAX_IMAGE_BYTES``, a JPEG with too many scans or a WebP whose header
    declares a canvas over the pixel setting ``limit`` (or empty, or too long).
    """
    max_bytes = shop_search_settings.MAX_IMAGE_BYTES
    if not data:
        raise ImageError("The image file is empty.", code="image_empty")
    if len(data) > max_bytes:
        raise ImageError(
            f"The image is {len(data):,} bytes; the limit is {max_bytes:,} "
            f"(SHOP_SEARCH['MAX_IMAGE_BYTES']).",
            code="image_too_large",
        )
    if data.startswith(b"\xff\xd8"):
        _check_jpeg_scans(data)
    declared = _webp_size(data)
    if declared:
        # Pillow's WebP decoder allocates its canvas when the file is opened.
        _check_size(*declared, limit)


def _check_jpeg_scans(data: bytes) -> None:
    """
    Refuse a JPEG with more than ``MAX_JPEG_SCANS`` scans (SOS segments).

    Every scan of a progressive JPEG makes libjpeg go over the whole image
    again, and a scan can be a few dozen bytes: a 300 KB file with 1000 scans
    costs half a minute of CPU. The walk follows the marker segments from SOI
    to EOI as libjpeg does, skipping each segment by its length and the
    entropy-coded data after each SOS (stuffed 0xFF00 bytes, RSTn, fill);
    a regular expression finds the markers, so it costs milliseconds even
    for a 20 MB file.
    """
    limit = shop_search_settings.MAX_JPEG_SCANS
    if not limit:
        return
    scans = markers = 0
    position = 2
    size = len(data)
    while markers < _MAX_JPEG_MARKERS:
        found = _JPEG_MARKER.search(data, position)
        if found is None:
            return
        at = found.start()
        marker = data[at + 1]
        markers += 1
        if marker == 0xD9:  # EOI: libjpeg stops here
            return
        if marker in (0x01, 0xD8):  # TEM, a stray SOI: no length
            position = at + 2
            continue
        if at + 4 > size:
            return
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2:
            return  # corrupt; Pillow refuses it
        if marker == 0xDA:
            scans += 1
            if scans > limit:
                raise ImageError(
                    f"The JPEG has more than {limit} scans "
                    f"(SHOP_SEARCH['MAX_JPEG_SCANS']); each one decodes the "
                    f"whole image again. Save it again as a baseline JPEG.",
                    code="image_too_complex",
                )
        position = at + 2 + length
    raise ImageError(
        f"The JPEG has more than {_MAX_JPEG_MARKERS:,} marker segments; a photo "
        f"has a few dozen. Save it again as a baseline JPEG.",
        code="image_too_complex",
    )


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk's header, or None."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    elif chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
    elif chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        width = (bits & 0x3FFF) + 1
        height = ((bits >> 14) & 0x3FFF) + 1
    else:
        return None
    return width, height


def check_header(image: Image.Image, limit: str) -> None:
    """
    Refuse an opened, not yet decoded ``image`` whose format is not in
    ``ALLOWED_FORMATS`` or whose size is empty, too long or over the pixel
    setting ``limit`` (a baseline JPEG gets ``MAX_IMAGE_PIXELS``).
    """
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(
            f"Image format {image.format} is not accepted; use JPEG, PNG, WebP or GIF.",
            code="image_unsupported_format",
        )
    if (
        image.format == "JPEG"
        and image.mode in ("RGB", "L")
        and not image.info.get("progressive")
    ):
        # libjpeg decodes a baseline JPEG straight to the reduced size (draft
        # mode): a 40-megapixel phone photo costs a few MB, so shoppers'
        # photos get the product images' limit. Progressive and CMYK JPEGs
        # buffer every coefficient at full size and keep the upload limit.
        limit = "MAX_IMAGE_PIXELS"
    _check_size(*image.size, limit)


def _check_size(width: int, height: int, limit: str) -> None:
    """Refuse an empty, extremely long or too large (setting ``limit``) size."""
    max_pixels = getattr(shop_search_settings, limit)
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.", code="image_corrupt")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(
            f"The image is {width}x{height}; images longer than {MAX_ASPECT} times "
            f"their width (or the reverse) are not accepted.",
            code="image_extreme_aspect",
        )
    if width * height > max_pixels:
        raise ImageError(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit "
            f"is {max_pixels:,} (SHOP_SEARCH[{limit!r}]). Upload a smaller image.",
            code="image_too_many_pixels",
        )
