"""
Latency of the storefront API on the demo catalog, in-process through DRF
(Django test client: URL routing, serializers, SQL, encoding; no network).

    .venv/bin/python bench/api_latency.py --size full --queries 100

``--size full`` uses the real architectures (CLIP ViT-B/32, 6-layer DistilBERT)
with random weights: speed does not depend on trained weights. Writes the
section "API latency (demo catalog)" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from _setup import configure, drop_synthetic, machine, percentiles, write_section

MODELS = {
    "full": "real architectures, random weights",
    "tiny": "tiny test models",
}

QUERIES = [
    "red dress",
    "rotes Kleid",
    "红色连衣裙",
    "فستان أحمر",
    "красное платье",
    "लाल पोशाक",
    "blue striped chair",
    "chaussures noires",
    "mochila verde",
    "gelbe Lampe",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import os

    os.environ["SHOP_SEARCH_PRECISION"] = args.precision
    configure(args.size)

    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    # Measure the work: no throttle, and no response cache (every request
    # searches; "repeated" rows then show the query-vector cache alone).
    override_settings(
        SHOP_SEARCH={
            **settings.SHOP_SEARCH,
            "THROTTLE_RATES": {},
            "RESULT_CACHE_SECONDS": 0,
        }
    ).enable()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from demo_shop.catalog.models import Product
    from shop_search import search

    drop_synthetic()  # the demo catalog alone, whatever search_scale.py left
    started = time.perf_counter()
    call_command("demo", "--no-serve", verbosity=0)
    setup = time.perf_counter() - started
    # As the demo's wsgi.py does at start: both models loaded and run once.
    from shop_search.switching import warm_up

    warm_up()
    client = Client()
    client.get("/api/search/", {"q": "warm up"})

    def timed(call) -> float:
        t0 = time.perf_counter()
        response = call()
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200, response.content[:300]
        return elapsed

    # unique queries: every one is encoded (cache cleared before each)
    cold = []
    for i in range(args.queries):
        search.query_cache.clear()
        q = QUERIES[i % len(QUERIES)]
        cold.append(timed(lambda q=q: client.get("/api/search/", {"q": q})))
    warm = [
        timed(lambda: client.get("/api/search/", {"q": "rotes Kleid"}))
        for _ in range(args.queries)
    ]
    images = [p.image.read() for p in Product.objects.order_by("pk")[:20]]
    image_runs = []
    for i in range(max(10, args.queries // 4)):
        data = images[i % len(images)]
        image_runs.append(
            timed(
                lambda d=data: client.post(
                    "/api/search/image/",
                    {"image": SimpleUploadedFile("p.png", d, "image/png")},
                )
            )
        )
    look_runs = []
    for i in range(5):
        data = images[i % len(images)]
        look_runs.append(
            timed(
                lambda d=data: client.post(
                    "/api/search/image/",
                    {
                        "image": SimpleUploadedFile("p.png", d, "image/png"),
                        "group": "look",
                    },
                )
            )
        )

    rows = [
        ("text query, encoded (cache miss)", cold),
        ("text query, repeated (cache hit)", warm),
        ("image query (PNG upload, 256 px)", image_runs),
        ("shop the look (detector + per-item search)", look_runs),
    ]
    lines = [
        f"Machine: {machine()}. Models: `{args.size}` ({MODELS[args.size]}), "
        f"precision {args.precision}. Result cache off (every request searches). "
        f"Catalog: {Product.objects.count()} demo products. Set-up (migrate, "
        f"load, index) took {setup:.1f} s.",
        "",
        "Command: `.venv/bin/python bench/api_latency.py --size "
        f"{args.size} --queries {args.queries} --precision {args.precision}`",
        "",
        "| request | n | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        lines.append(f"| {name} | {len(samples)} | {p50:.1f} | {p99:.1f} |")
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section(
            f"API latency (demo catalog, {args.size} models, {args.precision})", report
        )


if __name__ == "__main__":
    main()
