"""
Recall against latency at catalog scale, per ``EF_SEARCH``: the trade-off a
shop picks from when its catalog reaches a million products.

One catalog of ``--products`` synthetic products (one image each, clustered
unit vectors, 10% of them colour "ten": see search_scale.py) with the HNSW
index as the migration builds it (pgvector's m=16, ef_construction=64, or
``--m`` / ``--ef-construction``). For each ``EF_SEARCH`` value the same
queries go through the index (``EXACT_SCAN_THRESHOLD`` 0) unfiltered and
with the 10% filter; recall@10 is against the exact ranking of every
candidate.

    .venv/bin/python bench/recall_tradeoff.py --products 1000000

The catalog stays in the benchmark database and is reused when it already
holds as many products. Writes the section "Recall against latency at scale"
of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from _setup import (
    build_index,
    configure,
    every_request_searches,
    machine,
    percentiles,
    write_section,
)

SECTION = "Recall against latency at scale"


def catalog(products: int, m: int, ef_construction: int) -> str:
    """Load (or reuse) the catalog and its index; returns what was done."""
    from django.core.management import call_command
    from django.db import connection
    from search_scale import load_rows

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM catalog_product WHERE sku LIKE 'SCALE-%%'), "
            "(SELECT count(*) FROM shop_search_imagevector), "
            "(SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE "
            "indexrelid = to_regclass('shop_search_vector_hnsw'))"
        )
        found, vectors, definition = cursor.fetchone()
    wanted = f"m='{m}', ef_construction='{ef_construction}'"
    if found == products and vectors >= products and definition:
        defaults = "WITH" not in definition and (m, ef_construction) == (16, 64)
        if wanted in definition or defaults:
            return f"reused ({vectors:,} vectors)"
    call_command("demo", "--no-serve", verbosity=0)
    load_s = load_rows(products)
    build_s, _size = build_index(with_=wanted.replace("'", ""))
    return f"loaded in {load_s:.0f} s, HNSW built in {build_s:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--ef", type=int, nargs="+", default=[40, 100, 200, 400, 800, 1000]
    )
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configure(args.size)

    import numpy as np
    from django.conf import settings
    from django.test.utils import override_settings
    from search_scale import DIMS, first_vectors

    from demo_shop.catalog.models import Product
    from shop_search import search
    from shop_search.conf import shop_search_settings

    every_request_searches()
    done = catalog(args.products, args.m, args.ef_construction)
    everything = Product.objects.filter(sku__startswith="SCALE-")
    sets = {"unfiltered": everything, "10%": everything.filter(colour="ten")}
    rng = np.random.default_rng(1)
    sample = everything.order_by("?").values_list("pk", flat=True)[: args.queries]
    queries = np.stack(list(first_vectors(list(sample)).values()))
    queries = queries + 0.3 * rng.normal(size=queries.shape) / np.sqrt(DIMS)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(
        np.float32
    )

    def ranked(queryset, vector, **overrides):
        with override_settings(SHOP_SEARCH={**settings.SHOP_SEARCH, **overrides}):
            started = time.perf_counter()
            page = search.nearest(queryset, vector, limit=10)
            return [hit.object.pk for hit in page], time.perf_counter() - started

    truths = {  # every candidate ranked exactly: seconds each at 1M
        name: [
            ranked(qs, q, EXACT_SCAN_THRESHOLD=10**12, STATEMENT_TIMEOUT=600)[0]
            for q in queries
        ]
        for name, qs in sets.items()
    }
    sys.stderr.write(f"truths ready ({done})\n")
    rows = []
    for ef in args.ef:
        cells = []
        for name, queryset in sets.items():
            ranked(queryset, queries[0], EXACT_SCAN_THRESHOLD=0, EF_SEARCH=ef)
            times, recalls = [], []
            for vector, truth in zip(queries, truths[name], strict=True):
                got, seconds = ranked(
                    queryset, vector, EXACT_SCAN_THRESHOLD=0, EF_SEARCH=ef
                )
                times.append(seconds)
                recalls.append(len(set(got) & set(truth)) / max(1, len(truth)))
            p50, p99 = percentiles(times)
            cells.append(f"{np.mean(recalls):.3f} | {p50:.1f} / {p99:.1f}")
        shipped = " (default)" if ef == shop_search_settings.EF_SEARCH else ""
        rows.append(f"| {ef}{shipped} | " + " | ".join(cells) + " |")
        sys.stderr.write(rows[-1] + "\n")
    lines = [
        f"Machine: {machine()}. {args.products:,} products, one image each "
        f"(synthetic clustered vectors), HNSW m={args.m}, "
        f"ef_construction={args.ef_construction} ({done}); {args.queries} "
        "queries, each a product's vector moved a little; the index forced "
        "(`EXACT_SCAN_THRESHOLD` 0), iterative scan as shipped; recall@10 "
        "against the exact ranking of every candidate.",
        "",
        "Command: `.venv/bin/python bench/recall_tradeoff.py --products "
        f"{args.products}"
        + (f" --m {args.m}" if args.m != 16 else "")
        + (
            f" --ef-construction {args.ef_construction}"
            if args.ef_construction != 64
            else ""
        )
        + " --ef "
        + " ".join(str(e) for e in args.ef)
        + "`",
        "",
        "| `EF_SEARCH` | recall@10 | p50 / p99 ms | recall@10, 10% filter "
        "| p50 / p99 ms, 10% filter |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
