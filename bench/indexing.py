"""
Bulk indexing throughput: shop_search's pipeline against the tutorial loop.

The tutorial loop is what most guides show: for each product, open the image,
run transformers' CLIPProcessor and CLIPModel.get_image_features on it alone,
normalise, save the vector. shop_search batches images, decodes the next batch
while the model runs, and writes one transaction per batch. Both decode and
resize the same 1200x1200 JPEG product photos and write to PostgreSQL.

    .venv/bin/python bench/indexing.py --products 200

Full-size CLIP ViT-B/32 with random weights (speed does not depend on the
weights). Writes the section "Bulk indexing" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from _setup import configure, machine, write_section


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16", "int8"],
        default=["fp32", "bf16", "int8"],
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if "fp32" not in args.precisions:  # the others are compared with it
        args.precisions.insert(0, "fp32")
    paths = configure(args.size)

    import numpy as np
    import torch
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.test.utils import override_settings
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from demo_shop.catalog.models import Category, Product
    from shop_search.indexing import index_objects
    from shop_search.signal_handlers import indexing_paused

    call_command("migrate", verbosity=0)
    category, _ = Category.objects.get_or_create(name="Bench", slug="bench")
    Product.objects.filter(sku__startswith="BENCH-").delete()
    photos = make_photos(args.products)
    with indexing_paused():
        for n, data in enumerate(photos):
            product = Product(
                sku=f"BENCH-{n}", name=f"Bench {n}", price=1, category=category
            )
            product.image.save(f"bench-{n}.jpg", ContentFile(data), save=False)
            product.save()
    products = list(Product.objects.filter(sku__startswith="BENCH-").order_by("pk"))
    pks = [p.pk for p in products]

    # The tutorial loop.
    folder = f"{paths['image']}/0_CLIPModel"
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    with torch.inference_mode():
        model.get_image_features(
            **processor(images=Image.new("RGB", (64, 64)), return_tensors="pt")
        )
    started = time.perf_counter()
    tutorial = {}
    with torch.inference_mode():
        for product in products:
            with product.image.open("rb") as fh:
                image = Image.open(fh).convert("RGB")
            inputs = processor(images=image, return_tensors="pt")
            features = model.get_image_features(**inputs)
            if not torch.is_tensor(features):
                features = features.pooler_output
            vector = torch.nn.functional.normalize(features, dim=-1)[0].numpy()
            tutorial[product.pk] = vector
            Product.objects.filter(pk=product.pk).update(search_embedding=vector)
    tutorial_rate = len(products) / (time.perf_counter() - started)
    del model

    rows = [
        (
            "tutorial loop (CLIPModel + CLIPProcessor, one image at a time)",
            tutorial_rate,
            "",
        )
    ]
    vectors = {}
    for precision in args.precisions:
        with override_settings(
            SHOP_SEARCH={**settings.SHOP_SEARCH, "PRECISION": precision}
        ):
            from shop_search.encoders import get_image_encoder

            get_image_encoder().encode_images([Image.new("RGB", (64, 64))])
            started = time.perf_counter()
            result = index_objects(Product, pks, force=True)
            rate = result.encoded / (time.perf_counter() - started)
            vectors[precision] = {
                p.pk: p.search_embedding for p in Product.objects.filter(pk__in=pks)
            }
            rows.append(
                (
                    f"shop_search pipeline, {precision}, batch "
                    f"{settings.SHOP_SEARCH.get('BATCH_SIZE', 32)}",
                    rate,
                    "",
                )
            )
    cosines = {
        precision: np.array(
            [float(vectors["fp32"][pk] @ vectors[precision][pk]) for pk in pks]
        )
        for precision in args.precisions
        if precision != "fp32"
    }
    agreement = np.array([float(vectors["fp32"][pk] @ tutorial[pk]) for pk in pks])

    lines = [
        f"Machine: {machine()}. {len(products)} products, 1200x1200 JPEG photos, "
        f"models `{args.size}`.",
        "",
        f"Command: `.venv/bin/python bench/indexing.py --products {args.products} "
        f"--precisions {' '.join(args.precisions)}`",
        "",
        "| pipeline | images/s | vs tutorial |",
        "| --- | ---: | ---: |",
    ]
    for name, rate, _ in rows:
        lines.append(f"| {name} | {rate:.1f} | {rate / tutorial_rate:.2f}x |")
    close = "; ".join(
        f"{precision} vs fp32 min cosine {c.min():.4f}, mean {c.mean():.4f}"
        for precision, c in cosines.items()
    )
    lines += [
        "",
        f"Vectors as stored (halfvec): {close or 'fp32 only'}. shop_search fp32 vs "
        f"the tutorial's vectors: min cosine {agreement.min():.4f} (same model; "
        f"shop_search shrinks photos to 768 px before CLIP's own resize, and pads "
        f"long images).",
    ]
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    Product.objects.filter(sku__startswith="BENCH-").delete()
    if not args.no_write:
        write_section(f"Bulk indexing ({args.size} models)", report)


if __name__ == "__main__":
    main()
