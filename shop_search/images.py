"""
Safe image loading: the one place where shop_search decodes an image.

Limits are checked before any pixel is decoded (:mod:`shop_search.image_checks`):
the file's bytes, the pixels its header declares (a lower limit for shoppers'
uploads than for product images), its aspect ratio and, for JPEG, its scans. A
decode that takes longer than ``MAX_DECODE_SECONDS`` is stopped, and shoppers'
uploads are decoded at most ``MAX_CONCURRENT_DECODES`` at a time per process,
so a burst of uploads costs bounded memory.

Large images are reduced while they are converted (JPEGs while they are
decoded), a strip at a time, so an image never exists twice at full size;
EXIF orientation is applied; every mode is converted to RGB (transparency is
composited on white, 16-bit images are scaled, not clipped); animated images
give their first frame. Failures raise
:class:`~shop_search.exceptions.ImageError` with a specific ``code``.
"""

from __future__ import annotations

import warnings
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from .conf import shop_search_settings
from .exceptions import ImageError
from .image_checks import (
    ALLOWED_FORMATS,
    MAX_ASPECT,
    DecodeTimeout,
    check_bytes,
    check_header,
    decode_gate,
    open_with_deadline,
    read_bytes,
)

# ALLOWED_FORMATS, MAX_ASPECT and decode_gate live with the other checks in
# image_checks; they stay importable from here, where callers look for them.
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

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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
    data = read_bytes(source)
    limit = "MAX_UPLOAD_PIXELS" if upload else "MAX_IMAGE_PIXELS"
    check_bytes(data, limit)
    seconds = shop_search_settings.MAX_DECODE_SECONDS
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, on decompression bombs; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = open_with_deadline(data, seconds)
            check_header(image, limit)
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
    except DecodeTimeout as exc:
        raise ImageError(
            f"The image took longer than {seconds:g} s to decode "
            f"(SHOP_SEARCH['MAX_DECODE_SECONDS']); save it again at a smaller "
            f"size, as a baseline JPEG or a PNG.",
            code="image_too_complex",
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own words ("...decompression bomb DOS attack") are for
        # the logs, through the chained exception; shoppers get these.
        raise ImageError(
            f"The image has more pixels than the limit of "
            f"{getattr(shop_search_settings, limit):,} (SHOP_SEARCH[{limit!r}]). "
            f"Upload a smaller image.",
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


def _orientation(image: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation, 1-8, or None."""
    try:
        return image.getexif().get(0x0112)
    except DecodeTimeout:
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
