"""
Bulk indexing throughput: shop_search's pipeline against the tutorial loop,
and each runtime's forward pass alone.

The tutorial loop is what most guides show: for each product, open the image,
run transformers' CLIPProcessor and CLIPModel.get_image_features on it alone,
normalise, save the vector. shop_search batches images, decodes the next batch
(straight to the model's input square, in threads) while the model runs, and
writes one transaction per batch. Both decode and resize the same 1200x1200
JPEG product photos and write to PostgreSQL. The pipeline is timed as
``index_objects(..., documents=False)``: images only, like the tutorial loop
(the product words are a separate pass of ``shop_search_reindex``).

The whole command is timed too: ``manage.py shop_search_reindex --all`` in a
new process at default settings (process start, Django, model loading, the
words and the images of the demo catalog), against the tutorial loop on the
same image files.

Runtimes are BACKEND:PRECISION pairs (SHOP_SEARCH settings), "auto:auto"
being the defaults. For each, the forward-only table times the image tower
alone on 32 preprocessed photos (the ceiling a pipeline can reach) and one
short text query end to end, and compares the vectors with torch fp32.

    .venv/bin/python bench/indexing.py --products 200

Full-size CLIP ViT-B/32 and the multilingual DistilBERT student with random
weights (speed does not depend on the weights). Writes the section
"Indexing at the model's speed" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from _setup import ROOT, configure, machine, write_section

RUNTIMES = [
    "torch:fp32",
    "torch:bf16",
    "torch:int8",
    "onnx:fp32",
    "onnx:int8",
    "auto:auto",
]
QUERY = "red summer dress"


def make_photos(count: int) -> list[bytes]:
    """Product-photo-like JPEGs: the demo drawings at 1200x1200 with grain."""
    import numpy as np
    from PIL import Image

    from demo_shop.catalog.demo_data import generate_catalog

    rng = np.random.default_rng(0)
    items = list(generate_catalog())
    photos = []
    for i in range(count):
        image = Image.open(io.BytesIO(items[i % len(items)]["image"])).convert("RGB")
        image = image.resize((1200, 1200))
        noise = rng.integers(-12, 12, size=(1200, 1200, 3))
        array = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(array.astype("uint8")).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def forward_only(
    paths: dict[str, str], runtimes: list[str], photos: list[bytes], repeats: int
) -> tuple[list[str], dict[str, float]]:
    """
    The table of forward passes alone: image tower at batch 32 and one text
    query end to end, timed in ``repeats`` rounds that take each runtime in
    turn (a busy neighbour then slows one round, not one runtime), best round
    reported; load time (the first run exports ONNX graphs); the vectors
    against torch fp32.
    """
    import statistics

    from PIL import Image

    from shop_search.encoders import SentenceTransformerEncoder
    from shop_search.images import letterbox

    images = [
        letterbox(Image.open(io.BytesIO(photos[i % len(photos)])).convert("RGB"))
        for i in range(32)
    ]
    specs = ["torch:fp32", *[r for r in runtimes if r != "torch:fp32"]]
    loaded = {}
    for spec in specs:
        backend, precision = spec.split(":")
        started = time.perf_counter()
        encoders = {
            modality: SentenceTransformerEncoder(
                paths[modality], batch_size=32, precision=precision, backend=backend
            )
            for modality in ("image", "text")
        }
        features = encoders["image"].preprocess(images)
        vectors = {
            "image": encoders["image"].encode_features(features, "image"),
            "text": encoders["text"].encode_texts([QUERY]),
        }
        loaded[spec] = (encoders, features, vectors, time.perf_counter() - started)
    batches: dict[str, list[float]] = {spec: [] for spec in specs}
    queries: dict[str, list[float]] = {spec: [] for spec in specs}
    for _ in range(repeats):
        for spec, (encoders, features, _, _) in loaded.items():
            started = time.perf_counter()
            encoders["image"].encode_features(features, "image")
            batches[spec].append(time.perf_counter() - started)
            latencies = []
            for _ in range(7):
                started = time.perf_counter()
                encoders["text"].encode_texts([QUERY])
                latencies.append(time.perf_counter() - started)
            queries[spec].append(statistics.median(latencies))
    reference = loaded["torch:fp32"][2]
    rows = []
    for spec in runtimes:
        encoders, _, vectors, load = loaded[spec]
        cosine = {
            key: float((vectors[key] * reference[key]).sum(axis=1).min())
            for key in ("image", "text")
        }
        resolved = " / ".join(
            dict.fromkeys(
                f"{encoder.runtime.backend} {encoder.runtime.precision}"
                for encoder in encoders.values()
            )
        )
        rows.append(
            f"| {spec} | {resolved} | {32 / min(batches[spec]):.1f} "
            f"| {1000 * min(queries[spec]):.1f} | {cosine['image']:.5f} "
            f"| {cosine['text']:.5f} | {load:.1f} |"
        )
    rates = {spec: 32 / min(batches[spec]) for spec in runtimes}
    return [
        "| BACKEND:PRECISION | runs on | image tower, batch 32, images/s "
        "| text query p50 ms | image min cosine vs torch fp32 "
        "| text min cosine | load s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ], rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument(
        "--runtimes",
        nargs="+",
        choices=RUNTIMES,
        default=RUNTIMES,
        metavar="BACKEND:PRECISION",
        help=f"from {' '.join(RUNTIMES)}",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds over the runtimes"
    )
    parser.add_argument(
        "--forward-only",
        action="store_true",
        help="time the forward passes alone, skip the database pipeline",
    )
    parser.add_argument(
        "--runs", type=int, default=2, help="runs of the whole reindex command"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    paths = configure(args.size)
    photos = make_photos(args.products if not args.forward_only else 32)
    forward, rates = forward_only(paths, args.runtimes, photos, args.repeats)
    header = [
        f"Machine: {machine()}. Models `{args.size}`.",
        "",
        "Command: `.venv/bin/python bench/indexing.py "
        + ("--forward-only" if args.forward_only else f"--products {args.products}")
        + f" --runtimes {' '.join(args.runtimes)} --repeats {args.repeats}`",
        "",
        "Forward pass alone (32 photos letterboxed and preprocessed once), and "
        f"one short query ({QUERY!r}) encoded end to end (p50 of 7); best of "
        f"{args.repeats} rounds that take each runtime in turn:",
        "",
        *forward,
    ]
    if args.forward_only:
        sys.stdout.write("\n".join(header) + "\n")
        return
    pipeline = index_products(paths, args.runtimes, photos, rates, args.repeats)
    sys.stdout.write("\n".join([*header, "", *pipeline]) + "\n\n")
    command = reindex_command(paths, args.runs)
    sys.stdout.write("\n".join(command) + "\n")
    report = "\n".join([*header, "", *pipeline, "", *command])
    if not args.no_write:
        write_section(f"Indexing at the model's speed ({args.size} models)", report)


def index_products(
    paths: dict[str, str],
    runtimes: list[str],
    photos: list[bytes],
    forward: dict[str, float],
    repeats: int,
) -> list[str]:
    """
    The tutorial loop, then shop_search's pipeline per runtime, against the
    runtime's forward pass alone: in each of ``repeats`` rounds, each runtime
    in turn times one forward pass of 32 preprocessed photos, then the
    pipeline, back to back (a busy neighbour then slows both, not one); the
    best of each is reported. ``forward`` (images/s from the forward-only
    table) is kept as the higher of the two forward figures.
    """
    import numpy as np
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.test.utils import override_settings
    from PIL import Image

    from demo_shop.catalog.models import Category, Product
    from shop_search.indexing import index_objects
    from shop_search.signal_handlers import indexing_paused
    from shop_search.testing import index_view

    call_command("migrate", verbosity=0)
    from shop_search.switching import in_transition

    if in_transition():
        # Another benchmark left other models serving on this database (the
        # test models, say): switch first, or the pipeline would encode
        # every photo with both and read back the old model's vectors.
        call_command("shop_search_reindex", verbosity=0)
    category, _ = Category.objects.get_or_create(name="Bench", slug="bench")
    Product.objects.filter(sku__startswith="BENCH-").delete()
    with indexing_paused():
        for n, data in enumerate(photos):
            product = Product(
                sku=f"BENCH-{n}", name=f"Bench {n}", price=1, category=category
            )
            product.image.save(f"bench-{n}.jpg", ContentFile(data), save=False)
            product.save()
    products = list(Product.objects.filter(sku__startswith="BENCH-").order_by("pk"))
    pks = [p.pk for p in products]
    tutorial_rate, tutorial = tutorial_loop(paths, products)

    specs = ["torch:fp32", *[r for r in runtimes if r != "torch:fp32"]]
    best = dict.fromkeys(specs, 0.0)
    forward = dict(forward)
    sample = [
        Image.open(io.BytesIO(photos[i % len(photos)])).convert("RGB")
        for i in range(32)
    ]
    chosen = {}
    vectors = {}
    batch = settings.SHOP_SEARCH.get("BATCH_SIZE", 32)
    for _ in range(repeats):
        for spec in specs:
            backend, precision = spec.split(":")
            with override_settings(
                SHOP_SEARCH={
                    **settings.SHOP_SEARCH,
                    "PRECISION": precision,
                    "BACKEND": backend,
                }
            ):
                from shop_search.encoders import get_image_encoder

                encoder = get_image_encoder()
                features = encoder.preprocess(sample)
                encoder.encode_features(features, "image")
                started = time.perf_counter()
                encoder.encode_features(features, "image")
                rate = 32 / (time.perf_counter() - started)
                forward[spec] = max(forward.get(spec, 0.0), rate)
                started = time.perf_counter()
                result = index_objects(Product, pks, force=True, documents=False)
                rate = result.encoded / (time.perf_counter() - started)
                best[spec] = max(best[spec], rate)
                chosen[spec] = encoder.runtime
                vectors[spec] = {
                    p.pk: index_view(p).vector
                    for p in Product.objects.filter(pk__in=pks)
                }
    cosines = {
        spec: np.array(
            [float(vectors["torch:fp32"][pk] @ vectors[spec][pk]) for pk in pks]
        )
        for spec in runtimes
        if spec != "torch:fp32"
    }
    agreement = np.array(
        [float(vectors["torch:fp32"][pk] @ tutorial[pk]) for pk in pks]
    )
    lines = [
        f"Pipeline: {len(products)} products, 1200x1200 JPEG photos, batch "
        f"{batch}, best of {repeats} rounds. Tutorial loop (CLIPModel + "
        f"CLIPProcessor, one image at a time, torch fp32): "
        f"**{tutorial_rate:.1f} images/s**.",
        "",
        "| BACKEND:PRECISION | runs on | forward pass alone, images/s "
        "| pipeline, images/s | pipeline / forward | pipeline / tutorial |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for spec in runtimes:
        runtime = chosen[spec]
        ratio = best[spec] / forward[spec] if forward.get(spec) else float("nan")
        lines.append(
            f"| {spec} | {runtime.backend} {runtime.precision} "
            f"| {forward.get(spec, float('nan')):.1f} | {best[spec]:.1f} "
            f"| {ratio:.0%} | {best[spec] / tutorial_rate:.2f}x |"
        )
    close = "; ".join(
        f"{spec} min cosine {c.min():.4f}, mean {c.mean():.4f}"
        for spec, c in cosines.items()
    )
    lines += [
        "",
        f"Vectors as stored (halfvec) against torch fp32: {close or 'fp32 only'}. "
        f"shop_search torch fp32 vs the tutorial's vectors: min cosine "
        f"{agreement.min():.4f} (same model; shop_search decodes the photos "
        f"straight to CLIP's 224 px square in one resize instead of "
        f"CLIPProcessor's, and pads long images).",
    ]
    Product.objects.filter(sku__startswith="BENCH-").delete()
    return lines


def tutorial_loop(paths: dict[str, str], products: list) -> tuple[float, dict]:
    """
    Images/s of the tutorial loop over ``products`` (the loop alone: the model
    is loaded and warmed up first), and the vectors it stored by pk.
    """
    import torch
    from django.contrib.contenttypes.models import ContentType
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from demo_shop.catalog.models import Product
    from shop_search.models import ImageVector

    content_type = ContentType.objects.get_for_model(Product)
    folder = f"{paths['image']}/0_CLIPModel"
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    with torch.inference_mode():
        model.get_image_features(
            **processor(images=Image.new("RGB", (64, 64)), return_tensors="pt")
        )
    started = time.perf_counter()
    vectors = {}
    with torch.inference_mode():
        for product in products:
            with product.image.open("rb") as fh:
                image = Image.open(fh).convert("RGB")
            inputs = processor(images=image, return_tensors="pt")
            features = model.get_image_features(**inputs)
            if not torch.is_tensor(features):
                features = features.pooler_output
            vector = torch.nn.functional.normalize(features, dim=-1)[0].numpy()
            vectors[product.pk] = vector
            # Stored as the tutorial would: one row per product, one query.
            ImageVector.objects.update_or_create(
                content_type=content_type,
                object_pk=str(product.pk),
                image_model="tutorial",
                source="image",
                defaults={"group_pk": str(product.pk), "vector": vector},
            )
    rate = len(products) / (time.perf_counter() - started)
    ImageVector.objects.filter(image_model="tutorial").delete()
    return rate, vectors


def reindex_command(paths: dict[str, str], runs: int) -> list[str]:
    """
    ``manage.py shop_search_reindex --all`` on the demo catalog in a new
    process at default settings, timed from outside (process start, model
    loading, words and images), ``runs`` times; against the tutorial loop on
    the same image files.
    """
    import os
    import subprocess

    from PIL import Image

    from demo_shop.catalog.demo_data import generate_catalog
    from demo_shop.catalog.loading import load_items
    from demo_shop.catalog.models import Product
    from shop_search.encoders import SentenceTransformerEncoder

    load_items(generate_catalog())
    products = list(Product.objects.exclude(image="").order_by("pk"))
    # The default runtime's graphs, exported and checked as on a shop's first
    # run (nothing to do when they are cached already).
    image = SentenceTransformerEncoder(paths["image"])
    image.encode_images([Image.new("RGB", (64, 64))])
    SentenceTransformerEncoder(paths["text"]).encode_texts(["warm up"])
    tutorial_rate, _ = tutorial_loop(paths, products)
    tutorial_seconds = len(products) / tutorial_rate
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_shop.settings"}
    env.pop("SHOP_SEARCH_PRECISION", None)
    env.pop("SHOP_SEARCH_BACKEND", None)
    command = [sys.executable, "manage.py", "shop_search_reindex", "--all"]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True
        )
        seconds.append(time.perf_counter() - started)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    best = min(seconds)
    times = ", ".join(f"{s:.1f}" for s in seconds)
    # What --all spends on the words alone: every title through the text model.
    from shop_search.indexing import index_documents

    started = time.perf_counter()
    index_documents(Product, force=True)
    words = time.perf_counter() - started
    return [
        f"Whole command: `manage.py shop_search_reindex --all` on the demo "
        f"catalog ({len(products)} products, {len(products)} PNG images of "
        f"256 px, and their words), in a new process at default settings, "
        f"timed from outside: process start, Django, model loading, the words "
        f"and the images. ONNX graphs exported beforehand (a shop's first run "
        f"exports them once).",
        "",
        "| what | seconds | images/s | vs tutorial |",
        "| --- | ---: | ---: | ---: |",
        f"| tutorial loop on the same {len(products)} image files (the loop "
        f"alone: no process start, model loaded) | {tutorial_seconds:.1f} "
        f"| {tutorial_rate:.1f} | 1.00x |",
        f"| `shop_search_reindex --all`, best of {runs} runs ({times} s) "
        f"| {best:.1f} | {len(products) / best:.1f} "
        f"| {tutorial_seconds / best:.2f}x |",
        "",
        f"Of the command's time, the words (`--all` rewrites every product's "
        f"words and encodes its names with the text model, which the tutorial "
        f"loop does not do) took {words:.1f} s when timed alone in this "
        f"process.",
    ]


if __name__ == "__main__":
    main()
