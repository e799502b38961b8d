"""
Safe image loading: the one place where shop_search decodes an image.

Limits are checked from the header before any pixel is decoded; EXIF
orientation is applied; every mode is converted to RGB (transparency is
composited on white, 16-bit images are scaled, not clipped); animated images
give their first frame. Failures raise :class:`~shop_search.exceptions.ImageError`
with a specific ``code``.
"""

from __future__ import annotations

import io
import warnings
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .conf import shop_search_settings
from .exceptions import ImageError

__all__ = ["load_image", "letterbox", "ALLOWED_FORMATS", "MAX_ASPECT"]

#: Pillow format names accepted. HEIF/AVIF are added when their plugin is present.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "MPO", "HEIF", "AVIF"})

# A 10000x1 "image" would make CLIP's processor allocate gigabytes.
MAX_ASPECT = 10

# Modes Pillow resizes directly (others are converted to RGB first).
_RESIZABLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})

# Largest side kept before the model's processor sees the image. CLIP looks at
# 224x224, so decoding a 6000px photo in full only costs memory and time.
WORKING_SIZE = 768


def load_image(source: Any, *, max_side: int | None = WORKING_SIZE) -> Image.Image:
    """
    Open ``source`` (a path, bytes, a file object or a Django ``File``) as RGB.

    Raises ``ImageError`` with one of the codes ``image_too_large``,
    ``image_too_many_pixels``, ``image_unsupported_format``, ``image_corrupt``,
    ``image_empty`` or ``image_unreadable``.
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
            original_size = _oriented_size(image)
            if max_side and image.format == "JPEG":
                # Let libjpeg decode at a reduced scale: far less memory and time.
                image.draft("RGB", (max_side, max_side))
            image.load()
            image = _first_frame(image)
            image = _apply_orientation(image)
            if max_side and image.mode in _RESIZABLE and max(image.size) > max_side:
                # Shrink before converting: a 36-megapixel greyscale image
                # would otherwise become a 108 MB RGB copy first.
                image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
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
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    # Where the caller needs coordinates in the uploaded image (shop the look).
    image.info["original_size"] = original_size
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


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """The full-resolution size once EXIF orientation is applied."""
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - malformed EXIF
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _first_frame(image: Image.Image) -> Image.Image:
    # is_animated looks at one more frame; n_frames would walk all of them.
    if getattr(image, "is_animated", False):
        image.seek(0)
        return image.copy()
    return image


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF must not lose the image
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping at 255.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(array.max(), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype("uint8")
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "F":
        image = image.point(lambda v: v * 255.0).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha or image.mode in ("RGBa", "La"):
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
