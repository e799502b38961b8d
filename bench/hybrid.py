"""
Hybrid text search at catalog scale: what the words cost.

Loads N synthetic products (search_scale.load_rows: clustered image vectors,
``--images`` per product, in shop_search's tables) with names drawn from
colours x patterns x nouns x model numbers, writes their search documents
in SQL (the names' text vectors are random unit vectors: speed does not
depend on them), then times, with the query vector
already cached (what is compared is the ranking, not the encoder):

- image-only: the image channel alone (``nearest``, what text search was);
- hybrid: ``search_text`` (all text channels in one statement, the image
  channel, fusion, products read), the ranking cache off;
- lexical: the text channels' statement alone (``lexical.rank``);
- image only and hybrid again with the query encoded each time (new queries).

    .venv/bin/python bench/hybrid.py --products 100000

Writes the section "Hybrid text search" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from _setup import build_index, configure, machine, percentiles, write_section
from search_scale import build_vector_index, load_rows

COLOURS = ["red", "blue", "green", "black", "white", "grey", "pink", "brown"]
PATTERNS = ["plain", "striped", "dotted", "checked", "floral"]
NOUNS = ["dress", "shirt", "sofa", "lamp", "mug", "boot", "hat", "chair", "bag"]


def write_documents(columns: bool = False) -> None:
    """
    Names and documents for the SCALE- products, in SQL: the name from the
    product's number (not its primary key, so that every database built
    with the same arguments holds the same names), the document's vector
    its first image's. ``columns``: the vectors are in the product table's
    ``search_embedding`` column (the layout up to commit 09ad2fe, which
    bench/storage.py measures against).
    """
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    from demo_shop.catalog.models import Product
    from shop_search.models import serving

    colours = "ARRAY[" + ",".join(f"'{c}'" for c in COLOURS) + "]"
    patterns = "ARRAY[" + ",".join(f"'{p}'" for p in PATTERNS) + "]"
    nouns = "ARRAY[" + ",".join(f"'{n}'" for n in NOUNS) + "]"
    content_type = ContentType.objects.get_for_model(Product)
    current = serving()
    if columns:
        vector, join, join_params = "p.search_embedding", "", []
    else:
        vector = "v.vector"
        join = (
            "LEFT JOIN shop_search_imagevector v ON v.content_type_id = %s "
            "AND v.object_pk = p.id::text AND v.image_model = %s "
            "AND v.position = 0"
        )
        join_params = [content_type.pk, current.image_model]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE catalog_product SET name = initcap(
                ({colours})[1 + (n % {len(COLOURS)})] || ' ' ||
                ({patterns})[1 + (n / 7 % {len(PATTERNS)})] || ' ' ||
                ({nouns})[1 + (n / 31 % {len(NOUNS)})]) || ' M' || (n % 997)
              FROM (SELECT id AS pk, substr(sku, 7)::integer AS n
                      FROM catalog_product WHERE sku LIKE 'SCALE-%%') AS s
             WHERE id = s.pk
            """
        )
        cursor.execute(
            "DELETE FROM shop_search_searchdocument WHERE content_type_id = %s",
            [content_type.pk],
        )
        # Built once after the insert: far faster than row by row.
        cursor.execute("DROP INDEX IF EXISTS shop_search_document_vec")
        cursor.execute(
            f"""
            INSERT INTO shop_search_searchdocument (content_type_id, object_pk,
                title, names, body, identifiers, digest, text_model, vector,
                updated_at)
            SELECT %s, p.id::text, p.name, lower(p.name), lower(p.description),
                   ARRAY[upper(p.sku)], '', %s, {vector}, now()
              FROM catalog_product p {join}
            """,
            [content_type.pk, current.text_model, *join_params],
        )
        cursor.execute("VACUUM ANALYZE shop_search_searchdocument")
    build_index(
        table="shop_search_searchdocument",
        name="shop_search_document_vec",
        column="vector",
    )


def reusable(products: int, images: int) -> bool:
    """
    Whether an earlier run left this many SCALE- products with this many
    vectors each and their documents (a demo run would rewrite the 100,000
    synthetic documents, so it is skipped then).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM catalog_product WHERE sku LIKE 'SCALE-%%'),
                   (SELECT count(*) FROM shop_search_imagevector v
                      JOIN catalog_product p ON v.object_pk = p.id::text
                     WHERE p.sku LIKE 'SCALE-%%'),
                   (SELECT count(*) FROM shop_search_searchdocument d
                      JOIN catalog_product p ON d.object_pk = p.id::text
                     WHERE p.sku LIKE 'SCALE-%%')
            """
        )
        found = cursor.fetchone()
    return found == (products, products * images, products)


def timed(function, queries: list[str]) -> tuple[float, float]:
    samples = []
    for query in queries:
        t0 = time.perf_counter()
        function(query)
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--images", type=int, default=1, help="images (vectors) per product"
    )
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configure(args.size)

    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    from demo_shop.catalog.models import Product
    from shop_search import lexical, search
    from shop_search.models import serving

    override_settings(
        SHOP_SEARCH={**settings.SHOP_SEARCH, "RESULT_CACHE_SECONDS": 0}
    ).enable()
    call_command("migrate", verbosity=0)
    if not reusable(args.products, args.images):
        call_command("demo", "--no-serve", verbosity=0)
        load_rows(args.products, images=args.images)
        build_vector_index()
        write_documents()
    current = serving()
    queryset = Product.objects.all()
    rng_queries = [
        f"{COLOURS[i % 8]} {NOUNS[(i * 5) % 9]}"
        if i % 3
        else f"{COLOURS[i % 8]} {PATTERNS[i % 5]} {NOUNS[(i * 5) % 9]} m{i % 997}"
        for i in range(args.queries)
    ]
    for query in rng_queries:  # cache the query vectors: rankings are timed
        search.text_vector(query, current.text_encoder)
    search.search_text(queryset, "warm up", current=current)  # noise floors

    def image_only(query: str) -> None:
        vector = search.text_vector(query, current.text_encoder)
        search.nearest(queryset, vector, limit=24, image_model=current.image_model)

    def hybrid(query: str) -> None:
        search.search_text(queryset, query, current=current, limit=24)

    def lexical_only(query: str) -> None:
        vector = search.text_vector(query, current.text_encoder)
        lexical.rank(queryset, query, vector, text_model=current.text_model, depth=100)

    image = timed(image_only, rng_queries)
    fused = timed(hybrid, rng_queries)
    words = timed(lexical_only, rng_queries)

    # The same with the query encoded each time (a new query: what a
    # shopper waits for), on other words so no vector is cached.
    def encoding(path):
        def run(query: str) -> None:
            search.query_cache.clear()
            path(query)

        return run

    new_queries = [f"{q} {i}" for i, q in enumerate(rng_queries)]
    image_new = timed(encoding(image_only), new_queries)
    fused_new = timed(encoding(hybrid), new_queries)
    total = Product.objects.count()
    lines = [
        f"Machine: {machine()}. {total:,} products ({args.products:,} synthetic, "
        f"{args.images} image(s) each, with names from {len(COLOURS)} colours x "
        f"{len(PATTERNS)} patterns x "
        f"{len(NOUNS)} nouns x 997 model numbers), {args.queries} queries "
        f"(two words, or four with a model number), query vectors cached, "
        f"ranking cache off, 24 results.",
        "",
        f"Command: `.venv/bin/python bench/hybrid.py --products {args.products}"
        + (f" --images {args.images}" if args.images != 1 else "")
        + "`",
        "",
        "| path | p50 ms | p99 ms |",
        "| --- | ---: | ---: |",
        f"| image only (`nearest`, what text search was) | {image[0]:.1f} | "
        f"{image[1]:.1f} |",
        f"| hybrid (`search_text`: text channels, image channel, fusion) | "
        f"{fused[0]:.1f} | {fused[1]:.1f} |",
        f"| text channels alone (`lexical.rank`, one statement) | {words[0]:.1f} | "
        f"{words[1]:.1f} |",
        f"| image only, query encoded each time | {image_new[0]:.1f} | "
        f"{image_new[1]:.1f} |",
        f"| hybrid, query encoded each time | {fused_new[0]:.1f} | "
        f"{fused_new[1]:.1f} |",
        "",
        f"Hybrid p50 / image-only p50: {fused[0] / image[0]:.2f}x with the query "
        f"vector cached, {fused_new[0] / image_new[0]:.2f}x for new queries "
        f"(target: at most 1.5x).",
    ]
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section("Hybrid text search", report)


if __name__ == "__main__":
    main()
