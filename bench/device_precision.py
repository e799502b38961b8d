"""
``PRECISION = "auto"`` on whatever device this machine has: which runtime
and precision it picks, how far its vectors are from torch fp32 on the CPU,
and how fast the image tower and a text query run.

    .venv/bin/python bench/device_precision.py --size full

On a machine with a CUDA GPU it loads the same models on the GPU (``DEVICE``
``"cuda"``) at ``auto`` (which picks torch fp16), ``fp32`` and ``bf16``;
on a CPU-only machine it runs the CPU's ``auto`` choice alone. It uses only
the encoders (no database), so it also runs where Django is the only part of
the project installed. Prints a Markdown section and puts it in
BENCHMARKS.md as "Precision on this machine's device" (``--no-write``: print
only).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "Precision on this machine's device"
MODELS = {"full": "real architectures, random weights", "tiny": "tiny test models"}
TEXTS = [
    "red summer dress",
    "rotes Sommerkleid",
    "红色连衣裙",
    "blue striped armchair",
    "chaussures de course noires",
    "mochila verde de montaña",
    "gelbe Schreibtischlampe",
    "красное платье",
]


def configure() -> None:
    """Django settings for the encoders alone (no apps, no database)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True, SHOP_SEARCH={})
        django.setup()


def photos(count: int, size: int) -> list:
    """Differing JPEG photos, decoded (gradients and shapes, seeded)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        base = rng.integers(0, 255, size=3)
        image = Image.new("RGB", (size, size), tuple(int(c) for c in base))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            box = (
                sorted(rng.integers(0, size, size=2)),
                sorted(rng.integers(0, size, size=2)),
            )
            colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
            draw.rectangle([box[0][0], box[1][0], box[0][1], box[1][1]], fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        buffer.seek(0)
        out.append(Image.open(buffer).convert("RGB"))
    return out


def load(path: str, device: str, precision: str, backend: str = "auto"):
    from shop_search.encoders.sentence_transformers import (
        SentenceTransformerEncoder,
    )

    encoder = SentenceTransformerEncoder(
        path, device=device, precision=precision, backend=backend, batch_size=32
    )
    started = time.perf_counter()
    encoder.encode_texts(["warm up"]) if "text" in path else encoder.encode_images(
        photos(1, 64)
    )
    return encoder, time.perf_counter() - started


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def forward_rate(encoder, images: list, device: str, rounds: int) -> float:
    """Images per second of the forward pass alone, batch 32, best round."""
    features = encoder.preprocess(images[:32])
    encoder.encode_features(features, "image")  # warm up (kernels, autotune)
    synchronize(device)
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        encoder.encode_features(features, "image")
        synchronize(device)
        best = max(best, 32 / (time.perf_counter() - started))
    return best


def text_p50(encoder, device: str) -> float:
    encoder.encode_texts(TEXTS[:1])
    times = []
    for text in TEXTS * 2:
        started = time.perf_counter()
        encoder.encode_texts([text])
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default=str(ROOT / ".models"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configure()
    import torch

    from shop_search.testing import build_test_models

    paths = build_test_models(args.models, size=args.size)
    images = photos(args.images, 640)
    cuda = torch.cuda.is_available()
    reference = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    image_ref, _ = load(paths.image, "cpu", "fp32", "torch")
    text_ref, _ = load(paths.text, "cpu", "fp32", "torch")
    reference["image"] = image_ref.encode_images(images)
    reference["text"] = text_ref.encode_texts(TEXTS)
    device = "cuda" if cuda else "cpu"
    settings = ["auto", "fp32", "bf16"] if cuda else ["auto"]
    rows = []
    for precision in settings:
        image_encoder, image_load = load(paths.image, device, precision)
        text_encoder, _ = load(paths.text, device, precision)
        image_vectors = image_encoder.encode_images(images)
        text_vectors = text_encoder.encode_texts(TEXTS)
        runtime = image_encoder.runtime
        rows.append(
            (
                precision,
                f"{runtime.backend} {runtime.precision}",
                runtime.reason,
                forward_rate(image_encoder, images, device, args.rounds),
                text_p50(text_encoder, device),
                float(cosines(image_vectors, reference["image"]).min()),
                float(cosines(text_vectors, reference["text"]).min()),
                image_load,
            )
        )
        del image_encoder, text_encoder
        if cuda:
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "CPU"
    lines = [
        f"## {SECTION}",
        "",
        f"Device: {'CUDA ' + name if cuda else 'CPU only (' + name + ')'}; "
        f"torch {torch.__version__}, Python {platform.python_version()}; "
        f"models `{args.size}` ({MODELS[args.size]}). "
        f"{args.images} JPEG photos (640 px); reference: torch fp32 on the CPU.",
        "",
        f"Command: `.venv/bin/python bench/device_precision.py --size {args.size}`",
        "",
        "| PRECISION | runs on | why | image tower, batch 32, images/s "
        "| text query p50 ms | image min cosine vs CPU fp32 | text min cosine "
        "| load s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for precision, runs, why, rate, p50, image_cos, text_cos, seconds in rows:
        lines.append(
            f"| {precision} | {runs} | {why} | {rate:.1f} | {p50:.1f} "
            f"| {image_cos:.5f} | {text_cos:.5f} | {seconds:.1f} |"
        )
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    worst = min(min(row[5], row[6]) for row in rows)
    if worst < 0.995:
        sys.exit(f"vectors drifted from fp32: min cosine {worst:.5f} < 0.995")
    if not args.no_write:
        sys.path.insert(0, str(ROOT / "bench"))
        from _setup import write_section

        write_section(SECTION, report)


if __name__ == "__main__":
    main()
