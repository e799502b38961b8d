"""
A generated corpus of hostile and odd images, for the hardening tests and the
corpus benchmark: bombs, truncations, every mode, every EXIF orientation,
animations, polyglots, non-images and wrong extensions.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_with_header(
    width: int, height: int, *, rows: int = 4, depth: int = 1, colour_type: int = 0
) -> bytes:
    """A PNG that declares width x height but carries only ``rows`` rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    row_bytes = (width * depth + 7) // 8 + 1
    idat = zlib.compress(b"\0" * row_bytes * rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png_rgb16(width: int, height: int) -> bytes:
    """A valid 16-bit-per-channel RGB PNG (a gradient), which Pillow cannot write."""
    rows = b"".join(
        b"\0"
        + b"".join(
            struct.pack(">HHH", x * 1000, y * 1300, 65535 - x * 900)
            for x in range(width)
        )
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def png_zero_bomb(side: int) -> bytes:
    """A complete, valid greyscale PNG of side x side zeros: tiny file, big pixels."""
    raw = (b"\0" + b"\0" * side) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF marker claims another size."""
    data = bytearray(_save(Image.new("RGB", (16, 16), "red"), "JPEG"))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at != -1:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            break
    return bytes(data)


def progressive_jpeg_with_repeated_scans(side: int, extra_scans: int) -> bytes:
    """
    A flat side x side progressive JPEG whose last scan is repeated
    ``extra_scans`` times before EOI: libjpeg only warns, and decodes the
    whole image once more for every copy.
    """
    image = Image.new("RGB", (side, side), (128, 128, 128))
    data = _save(image, "JPEG", progressive=True, quality=75)
    last_scan = data.rfind(b"\xff\xda")
    assert data.endswith(b"\xff\xd9") and last_scan != -1
    scan = data[last_scan:-2]
    return data[:-2] + scan * extra_scans + b"\xff\xd9"


def noisy_image(
    width: int, height: int, mode: str = "RGB", seed: int = 3
) -> Image.Image:
    """Random pixels (incompressible), made fast by tiling a random block."""
    block = Image.frombytes(
        mode,
        (256, 256),
        random.Random(seed).randbytes(256 * 256 * len(mode)),
    )
    image = Image.new(mode, (width, height))
    for x in range(0, width, 256):
        for y in range(0, height, 256):
            image.paste(block, (x, y))
    return image


def flat_webp(side: int, *, lossless: bool = False) -> bytes:
    """A flat side x side WebP: a small file that decodes to side² pixels."""
    image = Image.new("RGB", (side, side), (90, 140, 200))
    return _save(image, "WEBP", lossless=lossless, quality=50)


def corpus() -> list[tuple[str, bytes]]:
    """(file name, bytes) pairs; at least 100 of them."""
    rng = random.Random(7)
    items: list[tuple[str, bytes]] = []
    base = Image.new("RGB", (120, 80), (200, 40, 60))
    for x in range(0, 120, 10):
        base.paste((20, 20, 200), (x, 0, x + 5, 80))

    # every mode, in the formats that carry it
    modes = {
        "1": ["PNG", "GIF"],
        "L": ["PNG", "JPEG", "WEBP", "GIF"],
        "LA": ["PNG"],
        "P": ["PNG", "GIF"],
        "RGB": ["PNG", "JPEG", "WEBP", "GIF"],
        "RGBA": ["PNG", "WEBP"],
        "CMYK": ["JPEG"],
        "I;16": ["PNG"],
        "I": ["TIFF"],
        "YCbCr": ["JPEG"],
    }
    for mode, formats in modes.items():
        image = (
            base.convert(mode)
            if mode not in ("I;16", "I")
            else base.convert("L").convert(mode)
        )
        if mode == "RGBA":
            image.putalpha(Image.linear_gradient("L").resize(image.size))
        for fmt in formats:
            items.append((f"mode-{mode}.{fmt.lower()}", _save(image, fmt)))
    transparent = base.convert("P")
    items.append(("palette-transparent.png", _save(transparent, "PNG", transparency=0)))
    items.append(("palette-transparent.gif", _save(transparent, "GIF", transparency=0)))
    items.append(
        (
            "rgba-fully-transparent.png",
            _save(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG"),
        )
    )
    items.append(("rgb-16bit.png", png_rgb16(64, 48)))
    items.append(("avif.avif", _save(base, "AVIF")))

    # every EXIF orientation, and broken EXIF
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        items.append(
            (f"exif-orientation-{orientation}.jpg", _save(base, "JPEG", exif=exif))
        )
    items.append(("exif-orientation-99.jpg", _save(base, "JPEG", exif=_exif_with(99))))
    good = _save(base, "JPEG")
    items.append(
        (
            "exif-garbage.jpg",
            good[:2] + b"\xff\xe1\x00\x10Exif\x00\x00garbage!" + good[2:],
        )
    )
    items.append(
        (
            "exif-truncated.jpg",
            good[:2] + b"\xff\xe1\x00\x40Exif\x00\x00II*\x00" + good[2:],
        )
    )

    # animations
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue")]
    items.append(
        (
            "animated.gif",
            _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        )
    )
    items.append(
        (
            "animated.webp",
            _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        )
    )
    items.append(
        (
            "animated.png",
            _save(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        )
    )
    many = [Image.new("P", (8, 8), i % 256) for i in range(500)]
    items.append(
        ("500-frames.gif", _save(many[0], "GIF", save_all=True, append_images=many[1:]))
    )

    # bombs and lies about size
    items.append(("bomb-png-30000x30000.png", png_with_header(30000, 30000)))
    items.append(("bomb-png-100000x1.png", png_with_header(100000, 100000, rows=1)))
    items.append(("bomb-jpeg-60000x60000.jpg", jpeg_with_size(60000, 60000)))
    items.append(("zero-bomb-6000x6000.png", png_zero_bomb(6000)))
    # issue 11: 28.6 s of CPU in 270 KB; 600 MB of memory in 2 KB (within
    # the product images' pixel limit, above the uploads')
    items.append(
        (
            "repeated-scans-6000x6000.jpg",
            progressive_jpeg_with_repeated_scans(6000, 1000),
        )
    )
    items.append(("webp-6300x6300.webp", flat_webp(6300, lossless=True)))
    items.append(
        ("gif-screen-65535.gif", b"GIF89a\xff\xff\xff\xff\x00\x00\x00" + b"\0" * 20)
    )
    items.append(("zero-size.png", png_with_header(0, 0)))

    # truncations of every format
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "AVIF"):
        data = _save(base, fmt)
        for fraction in (0.05, 0.3, 0.6, 0.9, 0.99):
            cut = max(1, int(len(data) * fraction))
            items.append((f"truncated-{int(fraction * 100)}.{fmt.lower()}", data[:cut]))

    # corrupt bytes inside otherwise valid files
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        data = bytearray(_save(base, fmt))
        for n in range(3):
            copy = bytearray(data)
            for _ in range(20):
                at = rng.randrange(16, len(copy))
                copy[at] = rng.randrange(256)
            items.append((f"flipped-{n}.{fmt.lower()}", bytes(copy)))

    # polyglots and non-images
    html = b"<html><script>alert(1)</script></html>"
    items += [
        ("png-then-html.png", _save(base, "PNG") + html),
        ("gif-header-then-html.gif", b"GIF89a" + html),
        ("html-with-png-magic.png", b"\x89PNG\r\n\x1a\n" + html),
        ("jpeg-then-zip.jpg", _save(base, "JPEG") + b"PK\x03\x04" + b"\0" * 100),
        ("html.png", html),
        (
            "svg.png",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        ),
        ("pdf.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n"),
        ("empty.png", b""),
        ("one-byte.jpg", b"\xff"),
        ("nul-bytes.png", b"\0" * 1000),
        ("random.webp", bytes(rng.randrange(256) for _ in range(5000))),
        ("text.gif", "Grüße, 世界".encode()),
        ("bmp.png", _save(base, "BMP")),
        ("tiff.jpg", _save(base, "TIFF")),
        ("ico.png", _save(base, "ICO")),
        ("ppm.jpg", _save(base, "PPM")),
        ("tga.png", _save(base, "TGA")),
        ("pcx.gif", _save(base, "PCX")),
    ]

    # wrong extensions and odd shapes
    items += [
        ("png-named.jpg", _save(base, "PNG")),
        ("jpeg-named.gif", _save(base, "JPEG")),
        ("webp-named.png", _save(base, "WEBP")),
        ("no-extension", _save(base, "PNG")),
        ("one-pixel.png", _save(Image.new("RGB", (1, 1), "red"), "PNG")),
        ("wide-10000x1.png", _save(Image.new("RGB", (10000, 1), "red"), "PNG")),
        ("tall-1x10000.png", _save(Image.new("L", (1, 10000), 128), "PNG")),
        ("large-4000x3000.jpg", _save(Image.new("RGB", (4000, 3000), "green"), "JPEG")),
    ]
    return items


def _exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif
