"""
The hostile image corpus (tests/hostile_images.py) through the API and
through product saves, with the process's peak memory.

    .venv/bin/python bench/hostile_corpus.py

Writes the section "Hostile image corpus" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import resource
import sys
import time

from _setup import ROOT, configure, machine, write_section


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configure(args.size)
    sys.path.insert(0, str(ROOT))

    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings

    from demo_shop.catalog.models import Category, Product
    from shop_search.status import status_of
    from shop_search.switching import warm_up
    from tests.hostile_images import corpus

    override_settings(
        SHOP_SEARCH={**settings.SHOP_SEARCH, "THROTTLE_RATES": {}}
    ).enable()
    call_command("demo", "--no-serve", verbosity=0)
    warm_up()
    items = corpus()
    client = Client()
    baseline = peak_mb()
    statuses: collections.Counter = collections.Counter()
    started = time.perf_counter()
    for name, data in items:
        upload = SimpleUploadedFile(name, data, "application/octet-stream")
        statuses[client.post("/api/search/image/", {"image": upload}).status_code] += 1
    api_seconds = time.perf_counter() - started
    after_api = peak_mb()

    category = Category.objects.first()
    Product.objects.filter(sku__startswith="CORPUS-").delete()
    started = time.perf_counter()
    for n, (name, data) in enumerate(items):
        product = Product(sku=f"CORPUS-{n}", name=name, price=1, category=category)
        product.image.save(name, ContentFile(data), save=False)
        product.save()
    save_seconds = time.perf_counter() - started
    saved = Product.objects.filter(sku__startswith="CORPUS-")
    states = collections.Counter(str(status_of(p)) for p in saved)
    after_saves = peak_mb()
    lost = len(items) - saved.count()
    saved.delete()

    report = "\n".join(
        [
            f"Machine: {machine()}. Models: `{args.size}`.",
            "",
            f"Command: `.venv/bin/python bench/hostile_corpus.py --size {args.size}`",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| images tried | {len(items)} |",
            f"| API responses by status | {dict(sorted(statuses.items()))} |",
            f"| API responses with status 500 | {statuses[500]} |",
            f"| product saves lost | {lost} |",
            f"| products after saving | {dict(states)} |",
            f"| time through the API / through saves | {api_seconds:.1f} s / "
            f"{save_seconds:.1f} s |",
            f"| peak RSS: models loaded / after API run / after saves | "
            f"{baseline:.0f} / {after_api:.0f} / {after_saves:.0f} MB |",
        ]
    )
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section(f"Hostile image corpus ({args.size} models)", report)


if __name__ == "__main__":
    main()
