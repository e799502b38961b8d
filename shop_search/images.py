"""
Safe image loading: the one place where shop_search decodes an image.

Limits are checked from the header before any pixel is decoded. Large images
are reduced while they are converted (JPEGs while they are decoded), a strip
at a time, so an image never exists twice at full size; EXIF orientation is
applied; every mode is converted to RGB (transparency is composited on white,
16-bit images are scaled, not clipped); animated images give their first
frame. Failures raise :class:`~shop_search.exceptions.ImageError` with a
specific ``code``.
"""

from __future__ import annotations

import io
import warnings
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from .conf import shop_search_settings
from .exceptions import ImageError

__all__ = [
    "load_image",
    "letterbox",
    "to_rgb",
    "ALLOWED_FORMATS",
    "MAX_ASPECT",
    "WORKING_SIZE",
]

#: Pillow format names accepted. HEIF/AVIF are added when their plugin is present.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "MPO", "HEIF", "AVIF"})

# A 10000x1 "image" would make CLIP's processor allocate gigabytes.
MAX_ASPECT = 10

# Largest side kept before the model's processor sees the image. CLIP looks at
# 224x224, so decoding a 6000px photo in full only costs memory and time.
WORKING_SIZE = 768

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


def load_image(source: Any, *, max_side: int | None = WORKING_SIZE) -> Image.Image:
    """
    Open ``source`` (a path, bytes, a file object or a Django ``File``) as RGB,
    its longest side at most ``max_side`` (None: full size).

    Raises ``ImageError`` with one of the codes ``image_too_large``,
    ``image_too_many_pixels``, ``image_extreme_aspect``,
    ``image_unsupported_format``, ``image_corrupt``, ``image_empty`` or
    ``image_unreadable``.
    """
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
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, on decompression bombs; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_header(image)
            orientation = _orientation(image)
            width, height = image.size
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if getattr(image, "is_animated", False):
                # is_animated looks at one more frame; n_frames would walk all.
                image.seek(0)
            if max_side and image.format in ("JPEG", "MPO"):
                # Let libjpeg decode at a reduced scale: far less memory and time.
                image.draft("RGB", (max_side, max_side))
            image.load()
            if max_side and max(image.size) > max_side:
                image = _reduce(image, max_side)
                image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            if orientation in _TRANSPOSE:
                image = image.transpose(_TRANSPOSE[orientation])
            image = to_rgb(image)
    except ImageError:
        raise
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


def _check_header(image: Image.Image) -> None:
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(
            f"Image format {image.format} is not accepted; use JPEG, PNG, WebP or GIF.",
            code="image_unsupported_format",
        )
    width, height = image.size
    max_pixels = shop_search_settings.MAX_IMAGE_PIXELS
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
            f"is {max_pixels:,} (SHOP_SEARCH['MAX_IMAGE_PIXELS']).",
            code="image_too_many_pixels",
        )


def _orientation(image: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation, 1-8, or None."""
    try:
        return image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - malformed EXIF must not lose the image
        return None


def _reduce(image: Image.Image, max_side: int) -> Image.Image:
    """
    ``image`` in a mode Pillow resizes, reduced by a whole factor to about
    twice ``max_side`` (the final resize then has pixels to spare).

    A strip at a time: converting a palette image to RGBA (or resizing RGBA,
    which Pillow premultiplies in a copy) at full size would hold a second,
    larger copy of the image; strips hold a few MB.
    """
    width, height = image.size
    factor = max(1, max(width, height) // (2 * max_side))
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
