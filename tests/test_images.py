"""The safe image loader: what it accepts, how it converts, what it refuses."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shop_search.exceptions import ImageError
from shop_search.images import load_image

from .conftest import png_bytes


@pytest.mark.parametrize(
    ("mode", "colour", "fmt"),
    [
        ("RGBA", (255, 0, 0, 0), "PNG"),  # fully transparent -> white
        ("LA", (0, 0), "PNG"),
        ("P", None, "GIF"),
        ("CMYK", (0, 255, 255, 0), "JPEG"),
        ("1", 1, "PNG"),
        ("L", 128, "PNG"),
        ("I;16", 65535, "PNG"),
    ],
)
def test_every_mode_becomes_rgb(mode, colour, fmt):
    if mode == "P":
        image = Image.new("P", (20, 20), 0)
        image.info["transparency"] = 0
        buffer = io.BytesIO()
        image.save(buffer, format="GIF", transparency=0)
        data = buffer.getvalue()
    else:
        data = png_bytes(colour, (20, 20), mode=mode, fmt=fmt)
    image = load_image(data)
    assert image.mode == "RGB"
    if mode in ("RGBA", "LA", "P", "I;16"):
        assert image.getpixel((5, 5)) == (255, 255, 255)  # white, not black or clipped


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (20, 40)


def test_large_images_are_reduced_to_the_working_size():
    assert max(load_image(png_bytes("red", (3000, 1000))).size) == 768


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "image_empty"),
        (b"<html>not an image</html>", "image_unsupported_format"),
        (png_bytes("red")[:60], "image_corrupt"),
    ],
)
def test_bad_files_are_refused_with_a_code(data, code):
    with pytest.raises(ImageError) as info:
        load_image(data)
    assert info.value.code == code


def test_byte_and_pixel_limits(settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "MAX_IMAGE_BYTES": 100}
    with pytest.raises(ImageError) as info:
        load_image(png_bytes("red", (200, 200)) + b"\0" * 200)
    assert info.value.code == "image_too_large"
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "MAX_IMAGE_PIXELS": 100}
    with pytest.raises(ImageError) as info:
        load_image(png_bytes("red", (20, 20)))
    assert info.value.code == "image_too_many_pixels"


def test_disallowed_format_is_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="BMP")
    with pytest.raises(ImageError) as info:
        load_image(buffer.getvalue())
    assert info.value.code == "image_unsupported_format"


def test_extreme_aspect_ratios_are_refused_and_long_ones_padded():
    with pytest.raises(ImageError) as info:
        load_image(png_bytes("red", (5000, 10)))
    assert info.value.code == "image_extreme_aspect"
    from shop_search.images import letterbox

    long = load_image(png_bytes("red", (900, 100)))
    padded = letterbox(long)
    assert padded.size[0] == 2 * padded.size[1]
    assert padded.getpixel((padded.size[0] // 2, 1)) == (255, 255, 255)
