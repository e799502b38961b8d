"""
Safe image loading: the one place where shop_search decodes an image.

Limits are checked before any pixel is decoded: the file's bytes, the pixels
its header declares (a lower limit for shoppers' uploads than for product
images), its aspect ratio and, for JPEG, its scans. A decode that takes longer
than ``MAX_DECODE_SECONDS`` is stopped, and shoppers' uploads are decoded at
most ``MAX_CONCURRENT_DECODES`` at a time per process, so a burst of uploads
costs bounded memory.

Large images are reduced while they are converted (JPEGs while they are
decoded), a strip at a time, so an image never exists twice at full size;
EXIF orientation is applied; every mode is converted to RGB (transparency is
composited on white, 16-bit images are scaled, not clipped); animated images
give their first frame. Failures raise
:class:`~shop_search.exceptions.ImageError` with a specific ``code``.
"""

from __future__ import annotations

import io
import re
import threading
import time
import warnings
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from .conf import shop_search_settings
from .exceptions import ImageError, SearchBusy

__all__ = [
    "load_image",
    "letterbox",
    "to_rgb",
    "decode_gate",
    "ALLOWED_FORMATS",
    "MAX_ASPECT",
    "WORKING_SIZE",
    "ENCODING_SIZE",
]

#: Pillow format names accepted. HEIF/AVIF are added when their plugin is present.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "MPO", "HEIF", "AVIF"})

# A 10000x1 "image" would make CLIP's processor allocate gigabytes.
MAX_ASPECT = 10

# Largest side kept before the model's processor sees the image. CLIP looks at
# 224x224, so decoding a 6000px photo in full only costs memory and time.
WORKING_SIZE = 768

# Largest side kept for encoding a product image: twice CLIP's 224-pixel
# input, so its own resize still averages the pixels it drops. A JPEG then
# decodes at a half or a quarter of its size (1200 px photos: 7 ms instead
# of 18 ms each), vectors within cosine 0.9999 of those from 768 px.
ENCODING_SIZE = 448

# Modes Pillow reduces and resizes (others are converted strip by strip).
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa"})

# Pixels converted at a time while reducing a large image: a few MB per strip
# instead of a second full-size copy.
_STRIP_PIXELS = 1 << 20

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

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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


def load_image(
    source: Any,
    *,
    max_side: int | None = WORKING_SIZE,
    upload: bool = False,
    min_side: int | None = None,
) -> Image.Image:
    """
    Open ``source`` (a path, bytes, a file object or a Django ``File``) as RGB,
    its longest side at most ``max_side`` (None: full size).

    ``min_side`` (instead of ``max_side``) is for a caller that resizes the
    image once more itself, to a model's input: a large image is only reduced
    by whole factors (a JPEG while it is decoded, others by averaging blocks
    of pixels) while its shorter side stays at least ``min_side``; it is not
    resampled.

    ``upload=True`` is for images from shoppers (photo search, shop the look):
    the pixel limit is ``MAX_UPLOAD_PIXELS`` instead of ``MAX_IMAGE_PIXELS``,
    and the decode waits for a slot in :data:`decode_gate`, raising
    :class:`~shop_search.exceptions.SearchBusy` if none frees up in time.

    Raises ``ImageError`` with one of the codes ``image_too_large``,
    ``image_too_many_pixels``, ``image_too_complex``, ``image_extreme_aspect``,
    ``image_unsupported_format``, ``image_corrupt``, ``image_empty`` or
    ``image_unreadable``.
    """
    if not upload:
        return _load(source, max_side, min_side, upload=False)
    with decode_gate:
        # The bytes are read inside the gate too: waiting uploads hold none.
        return _load(source, max_side, min_side, upload=True)


def _load(
    source: Any, max_side: int | None, min_side: int | None, *, upload: bool
) -> Image.Image:
    data = _read_bytes(source)
    max_bytes = shop_search_settings.MAX_IMAGE_BYTES
    if not data:
        raise ImageError("The image file is empty.", code="image_empty")
    if len(data) > max_bytes:
        raise ImageError(
            f"The image is {len(data):,} bytes; the limit is {max_bytes:,} "
            f"(SHOP_SEARCH['MAX_IMAGE_BYTES']).",
            code="image_too_large",
        )
    limit = "MAX_UPLOAD_PIXELS" if upload else "MAX_IMAGE_PIXELS"
    if data.startswith(b"\xff\xd8"):
        _check_jpeg_scans(data)
    declared = _webp_size(data)
    if declared:
        # Pillow's WebP decoder allocates its canvas when the file is opened.
        _check_size(*declared, limit)
    seconds = shop_search_settings.MAX_DECODE_SECONDS
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, on decompression bombs; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(_DeadlineReader(data, seconds))
            image.decodermaxblock = _READ_BLOCK
            _check_header(image, limit)
            # Reading a PNG's EXIF decodes it (the eXIf chunk may follow the
            # pixels), after the checks above.
            orientation = _orientation(image)
            width, height = image.size
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if getattr(image, "is_animated", False):
                # is_animated looks at one more frame; n_frames would walk all.
                image.seek(0)
            draft = min_side or max_side
            if draft and image.format in ("JPEG", "MPO"):
                # Let libjpeg decode at a reduced scale: far less memory and
                # time. The scale keeps both sides at least ``draft``.
                image.draft("RGB", (draft, draft))
            image.load()
            if min_side:
                factor = min(image.size) // min_side
                if factor > 1:
                    image = _reduce(image, factor)
            elif max_side and max(image.size) > max_side:
                image = _reduce(image, max(1, max(image.size) // (2 * max_side)))
                image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            if orientation in _TRANSPOSE:
                image = image.transpose(_TRANSPOSE[orientation])
            image = to_rgb(image)
    except ImageError:
        raise
    except _DecodeTimeout as exc:
        raise ImageError(
            f"The image took longer than {seconds:g} s to decode "
            f"(SHOP_SEARCH['MAX_DECODE_SECONDS']); save it again at a smaller "
            f"size, as a baseline JPEG or a PNG.",
            code="image_too_complex",
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"The image has too many pixels to decode safely: {exc}",
            code="image_too_many_pixels",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            "The file is not an image in a supported format (JPEG, PNG, WebP, GIF).",
            code="image_unsupported_format",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"The image is truncated or corrupt: {exc}", code="image_corrupt"
        ) from exc
    if isinstance(image, ImageFile.ImageFile):
        # Not reduced or converted: detach it from the file and its decoder
        # (Pillow's WebP decoder keeps two canvases while the file lives).
        image = image.copy()
    # Where the caller needs coordinates in the uploaded image (shop the look).
    image.info["original_size"] = (width, height)
    return image


class _DecodeTimeout(Exception):
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
            raise _DecodeTimeout
        return super().read(size)


def _read_bytes(source: Any) -> bytes:
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


def _check_header(image: Image.Image, limit: str) -> None:
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


def _orientation(image: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation, 1-8, or None."""
    try:
        return image.getexif().get(0x0112)
    except _DecodeTimeout:
        raise
    except Exception:  # noqa: BLE001 - malformed EXIF must not lose the image
        return None


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """
    ``image`` in a mode Pillow resizes, reduced by the whole ``factor`` (the
    callers leave the final resize pixels to spare).

    A strip at a time: converting a palette image to RGBA (or resizing RGBA,
    which Pillow premultiplies in a copy) at full size would hold a second,
    larger copy of the image; strips hold a few MB.
    """
    width, height = image.size
    if image.mode in _REDUCIBLE and image.mode not in ("LA", "RGBA"):
        return image.reduce(factor) if factor > 1 else image
    top = None
    if image.mode == "I":
        top = image.getextrema()[1]
    rows = max(1, _STRIP_PIXELS // width // factor) * factor
    reduced: Image.Image | None = None
    for y in range(0, height, rows):
        strip = _reducible(image.crop((0, y, width, min(height, y + rows))), top)
        if factor > 1:
            strip = strip.reduce(factor)
        if reduced is None:
            size = (-(-width // factor), -(-height // factor))
            reduced = Image.new(strip.mode, size)
        reduced.paste(strip, (0, y // factor))
    assert reduced is not None
    return reduced


def _reducible(image: Image.Image, top: Any = None) -> Image.Image:
    """``image`` in one of the modes in ``_REDUCIBLE``, as few bytes as it needs."""
    mode = image.mode
    if mode in _REDUCIBLE:
        return image
    if mode.startswith("I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping at 255.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        elif top is None:
            top = array.max()
        array = np.clip(array / max(float(top), 1.0) * 255.0, 0, 255)
        return Image.fromarray(array.astype("uint8"), mode="L")
    if mode == "F":
        return image.point(lambda v: v * 255.0).convert("L")
    if mode == "1":
        return image.convert("L")
    if mode == "PA" or (mode == "P" and image.has_transparency_data):
        return image.convert("RGBA")
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    image = _reducible(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def letterbox(image: Image.Image, max_ratio: float = 2.0) -> Image.Image:
    """
    Pad a long image with white to at most ``max_ratio``:1, centred.

    CLIP's processor scales the short side to 224 pixels, so a 10:1 image
    would become 2240x224 before cropping; padded, the whole product stays in
    view and the processor's work stays bounded.
    """
    width, height = image.size
    if max(width, height) <= max_ratio * min(width, height):
        return image
    if width > height:
        size = (width, int(width / max_ratio))
    else:
        size = (int(height / max_ratio), height)
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas
