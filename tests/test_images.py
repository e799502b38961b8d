"""The safe image loader: what it accepts, how it converts, what it refuses."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from shop_search.exceptions import ImageError
from shop_search.images import load_image, to_rgb

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


def _gradient(mode: str, size: tuple[int, int]) -> Image.Image:
    """A diagonal gradient in ``mode``, with a transparent band where it can."""
    grey = Image.linear_gradient("L").resize(size).rotate(30, expand=False)
    if mode == "I;16":
        return grey.convert("I").point(lambda v: v * 257).convert("I;16")
    if mode == "P":
        image = grey.convert("RGB").convert("P")
        image.info["transparency"] = image.getpixel((0, 0))
        return image
    image = grey.convert(mode) if mode != "RGBA" else grey.convert("RGB")
    if mode == "RGBA":
        alpha = Image.new("L", size, 255)
        alpha.paste(0, (0, 0, size[0], size[1] // 4))
        image.putalpha(alpha)
    return image


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "1", "L", "I;16"])
def test_large_images_are_reduced_like_a_full_size_conversion(mode):
    # Large images are converted and reduced a strip at a time (so the image
    # never exists twice at full size); the result must look the same as
    # converting the whole image, then shrinking it.
    original = _gradient(mode, (3300, 1700))
    buffer = io.BytesIO()
    original.save(buffer, format="PNG", transparency=original.info.get("transparency"))
    image = load_image(buffer.getvalue())
    expected = to_rgb(original)
    expected.thumbnail((768, 768), Image.Resampling.BICUBIC)
    assert image.mode == "RGB"
    assert abs(image.size[0] - expected.size[0]) <= 1
    assert abs(image.size[1] - expected.size[1]) <= 1
    difference = ImageChops.difference(image.resize(expected.size), expected)
    mean = sum(ImageStat.Stat(difference).mean) / 3
    assert mean < 1, mean  # no seams between strips, no darkened transparency


def test_orientation_is_applied_to_large_images():
    image = Image.new("RGB", (3000, 1500), "red")
    image.paste("blue", (0, 0, 1500, 1500))  # left half blue
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == (384, 768)
    assert loaded.info["original_size"] == (1500, 3000)
    assert loaded.getpixel((192, 100)) == (0, 0, 255)  # blue on top after rotation


def test_min_side_reduces_by_whole_factors_only_and_keeps_the_short_side():
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 800), "green").save(buffer, format="JPEG")
    jpeg = load_image(buffer.getvalue(), min_side=224)
    assert jpeg.size == (600, 400)  # libjpeg's 1/2 scale; 1/4 would be < 224
    png = load_image(png_bytes("red", (3000, 1000)), min_side=224)
    assert png.size == (750, 250)  # reduced 4x, not resampled to 224
    assert load_image(png_bytes("red", (100, 60)), min_side=224).size == (100, 60)
