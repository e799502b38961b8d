"""
Search at catalog scale: query latency (HNSW vs exact scan vs NumPy flat),
recall@10 plain and filtered, index build time and size (halfvec vs vector),
and end-to-end text queries through the DRF endpoint.

Synthetic clustered unit vectors are written as real products' image vectors
in shop_search's tables, ``--images`` per product (10% of the products colour
"ten", 1% colour "one", for the filtered runs).

    .venv/bin/python bench/search_scale.py --sizes 10000 100000 1000000

Writes the section "Search at scale" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from _setup import (
    build_index,
    configure,
    machine,
    percentiles,
    shared_buffers,
    write_section,
)

DIMS = 512


def synthetic_vectors(n: int, seed: int = 0, images: int = 1):
    """
    Blocks of ``(n, k, vector)``: ``n`` products' clustered unit vectors,
    ``images`` per product. A product's first image draws the same vector
    whatever ``images`` is (so catalogs of 1 and 3 images per product share
    their first images); its other images are that vector moved a little
    (another angle, another colour of the item).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    others = np.random.default_rng(seed + 1)
    centres = rng.normal(size=(200, DIMS)).astype(np.float32)
    for start in range(0, n, 10_000):
        size = min(10_000, n - start)
        block = centres[rng.integers(0, len(centres), size)]
        block = block + 0.6 * rng.normal(size=(size, DIMS)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        for k in range(images):
            vectors = block
            if k:
                # Cosine about 0.86 to the first image.
                noise = others.normal(size=(size, DIMS)).astype(np.float32)
                vectors = block + 0.6 / np.sqrt(DIMS) * noise
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            yield start, k, vectors


def load_rows(n: int, seed: int = 0, images: int = 1) -> float:
    """
    Replace the SCALE- products with ``n`` synthetic ones, each with
    ``images`` images (the product's own, then ``images - 1`` gallery rows)
    and their vectors and index entries in shop_search's tables, as if
    indexed by the serving image model. Leaves the image vectors' HNSW index
    dropped: call :func:`build_vector_index` next. Returns seconds.
    """
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from demo_shop.catalog.models import Category, Product
    from shop_search.models import serving

    category, _ = Category.objects.get_or_create(name="Scale", slug="scale")
    content_type = ContentType.objects.get_for_model(Product)
    model_id = serving().image_model
    synthetic = "SELECT id::text FROM catalog_product WHERE sku LIKE 'SCALE-%%'"
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Dropped first: removing rows from an HNSW graph one by one is slow.
        cursor.execute("DROP INDEX IF EXISTS shop_search_vector_hnsw")
        for table in ("imagevector", "indexentry", "searchdocument"):
            cursor.execute(
                f"DELETE FROM shop_search_{table} WHERE content_type_id = %s "
                f"AND object_pk IN ({synthetic})",
                [content_type.pk],
            )
        cursor.execute(
            "DELETE FROM catalog_productimage WHERE product_id IN "
            "(SELECT id FROM catalog_product WHERE sku LIKE 'SCALE-%%')"
        )
        cursor.execute("DELETE FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        cursor.execute(
            "CREATE TEMP TABLE scale_rows (n integer, k integer, emb halfvec(512)) "
            "ON COMMIT PRESERVE ROWS"
        )
        raw = cursor.connection
        register_vector(raw)
        with raw.cursor().copy(
            "COPY scale_rows (n, k, emb) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "int4", "halfvec"])
            for start, k, block in synthetic_vectors(n, seed, images):
                for i, vector in enumerate(block):
                    copy.write_row((start + i, k, HalfVector(vector)))
        # The first image is the product's own field, the others gallery rows.
        cursor.execute(
            """
            ALTER TABLE scale_rows ADD COLUMN image text;
            UPDATE scale_rows SET image = CASE WHEN k = 0
                THEN 'products/synthetic.png'
                ELSE 'gallery/scale-' || n || '-' || k || '.png' END;
            """
        )
        cursor.execute(
            """
            INSERT INTO catalog_product (sku, name, name_translations, description,
                price, currency, category_id, colour, image, in_stock,
                is_published, created_at, updated_at)
            SELECT 'SCALE-' || n, 'Synthetic ' || n, '{}', '', (n %% 500) + 1, 'EUR',
                   %s, CASE WHEN n %% 100 = 0 THEN 'one'
                            WHEN n %% 10 = 0 THEN 'ten' ELSE 'common' END,
                   image, true, true, now(), now()
              FROM scale_rows WHERE k = 0
            """,
            [category.pk],
        )
        cursor.execute(
            """
            CREATE TEMP TABLE scale_keys ON COMMIT PRESERVE ROWS AS
            SELECT s.n, s.k, s.image, s.emb, p.id AS product_id, NULL::bigint AS gid
              FROM scale_rows s JOIN catalog_product p ON p.sku = 'SCALE-' || s.n;
            DROP TABLE scale_rows;
            """
        )
        if images > 1:
            cursor.execute(
                """
                WITH gallery AS (
                    INSERT INTO catalog_productimage (product_id, image, position)
                    SELECT product_id, image, k FROM scale_keys WHERE k > 0
                    RETURNING id, product_id, position)
                UPDATE scale_keys s SET gid = g.id FROM gallery g
                 WHERE s.product_id = g.product_id AND s.k = g.position
                """
            )
        cursor.execute(
            """
            INSERT INTO shop_search_imagevector (content_type_id, object_pk,
                group_pk, image_model, source, position, fingerprint, vector)
            SELECT %s, product_id::text, product_id::text, %s,
                   CASE WHEN k = 0 THEN 'image' ELSE 'gallery__image:' || gid END,
                   k, md5(image), emb
              FROM scale_keys ORDER BY product_id, k
            """,
            [content_type.pk, model_id],
        )
        # The digest of a product's images: their names, one per line, in order.
        cursor.execute(
            """
            INSERT INTO shop_search_indexentry (content_type_id, object_pk,
                image_model, digest, error, attempts, indexed_at)
            SELECT %s, product_id::text, %s,
                   md5(string_agg(image, E'\\n' ORDER BY k)), '', 0, now()
              FROM scale_keys GROUP BY product_id
            """,
            [content_type.pk, model_id],
        )
        cursor.execute("DROP TABLE scale_keys")
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:  # the deleted rows of an earlier size
        for table in (
            "catalog_product",
            "catalog_productimage",
            "shop_search_imagevector",
            "shop_search_indexentry",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return seconds


def build_vector_index() -> tuple[float, int]:
    """Build the image vectors' HNSW index (shop_search's); seconds and bytes."""
    return build_index(
        table="shop_search_imagevector", name="shop_search_vector_hnsw", column="vector"
    )


def _array(value):
    import numpy as np

    if hasattr(value, "to_numpy"):  # pgvector's HalfVector
        value = value.to_numpy()
    elif isinstance(value, str):  # a connection without pgvector's types
        value = [float(x) for x in value.strip("[]").split(",")]
    return np.asarray(value, dtype=np.float32)


def all_vectors():
    """Every image vector of the SCALE- products, as one float32 matrix."""
    import numpy as np
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT v.vector FROM shop_search_imagevector v JOIN catalog_product p "
            "ON v.object_pk = p.id::text WHERE p.sku LIKE 'SCALE-%%'"
        )
        return np.stack([_array(v) for (v,) in cursor])


def first_vectors(pks=None):
    """``{product pk: vector of its first image}`` for the SCALE- products."""
    from django.db import connection

    from shop_search.models import serving

    sql = (
        "SELECT p.id, v.vector FROM catalog_product p "
        "JOIN shop_search_imagevector v ON v.object_pk = p.id::text "
        "AND v.position = 0 AND v.image_model = %s WHERE p.sku LIKE 'SCALE-%%'"
    )
    params = [serving().image_model]
    if pks is not None:
        sql += " AND p.id = ANY(%s)"
        params.append(list(pks))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk: _array(v) for pk, v in cursor.fetchall()}


WORDS = [
    "red",
    "blue",
    "dress",
    "Kleid",
    "chaise",
    "红色",
    "лампа",
    "bolso",
    "green",
    "mug",
    "sofa",
    "hat",
]


def end_to_end(n: int, precision: str, queries: int) -> str:
    """Text queries through the DRF endpoint: new ones, then a repeated one."""
    from django.core.cache import caches
    from django.test import Client

    from shop_search import search
    from shop_search.conf import shop_search_settings

    # New queries must not be answered by an earlier run's response cache.
    caches[shop_search_settings.CACHE_ALIAS].clear()
    client = Client()
    assert client.get("/api/search/", {"q": "warm up"}).status_code == 200
    cold, warm = [], []
    for i in range(queries):
        search.query_cache.clear()
        q = f"{WORDS[i % 12]} {WORDS[(i * 7) % 12]} {i}"
        t0 = time.perf_counter()
        assert client.get("/api/search/", {"q": q}).status_code == 200
        cold.append(time.perf_counter() - t0)
    for _ in range(queries):
        t0 = time.perf_counter()
        assert client.get("/api/search/", {"q": "red dress"}).status_code == 200
        warm.append(time.perf_counter() - t0)
    c50, c99 = percentiles(cold)
    w50, w99 = percentiles(warm)
    return (
        f"\nText query end to end through the DRF endpoint at {n:,} products, "
        f"query encoder {precision} (URL routing, validation, query encoding, SQL, "
        f"24 products serialized, category suggestions): new query p50 "
        f"{c50:.1f} ms, p99 {c99:.1f} ms; repeated query (answered from the 30 s "
        f"response cache, `RESULT_CACHE_SECONDS`) p50 {w50:.1f} ms, p99 "
        f"{w99:.1f} ms."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--images", type=int, default=1, help="images (vectors) per product"
    )
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16", "int8"],
        default=["fp32", "int8"],
        help="query-encoder precisions for the end-to-end API figures",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configure(args.size)

    import numpy as np
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import override_settings

    from demo_shop.catalog.models import Product
    from shop_search import search

    override_settings(
        SHOP_SEARCH={**settings.SHOP_SEARCH, "THROTTLE_RATES": {}}
    ).enable()
    call_command("demo", "--no-serve", verbosity=0)
    rng = np.random.default_rng(1)

    def exact_ids(queryset, vector, k=10):
        with override_settings(
            SHOP_SEARCH={**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 10**12}
        ):  # every candidate's every image, ranked exactly
            page = search.nearest(queryset, vector, limit=k)
        assert page.exact
        return [hit.object.pk for hit in page]

    from shop_search.conf import shop_search_settings

    ef_search = shop_search_settings.EF_SEARCH
    lines = [
        f"Machine: {machine()}. PostgreSQL 18 + pgvector 0.8 (embedded, "
        f"shared_buffers {shared_buffers()}), "
        f"HNSW m=16, ef_construction=64, ef_search={ef_search}, iterative scan "
        f"strict_order. {args.images} image(s) per product, ranked by its best "
        f"image. {args.queries} queries per cell (filtered and 1M exact: 50).",
        "",
        "Command: `.venv/bin/python bench/search_scale.py --sizes "
        + " ".join(str(s) for s in args.sizes)
        + (f" --images {args.images}" if args.images != 1 else "")
        + " --precisions "
        + " ".join(args.precisions)
        + "`",
        "",
        "| products | load s | HNSW build s | index MB | HNSW p50/p99 ms "
        "| exact p50/p99 ms | NumPy flat p50 ms | HNSW speed-up | recall@10 "
        "| recall@10 10% / 1% filter (defaults) | full pages 10% / 1% |",
        "|" + " ---: |" * 11,
    ]
    e2e_lines = []
    filter_notes = []
    for n in args.sizes:
        load_s = load_rows(n, images=args.images)
        build_s, index_bytes = build_vector_index()
        everything = Product.objects.filter(sku__startswith="SCALE-")
        # Every image's vector: NumPy scores them all (a product's best image
        # wins, as in the database).
        matrix = all_vectors() if n <= 100_000 else None
        queries = rng.normal(size=(args.queries, DIMS)).astype(np.float32)
        sample = everything.order_by("?").values_list("pk", flat=True)[: args.queries]
        sample = first_vectors(list(sample))
        queries = np.stack(list(sample.values())) + 0.3 * queries / np.sqrt(DIMS)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        # float32 like the stored rows: a float64 query would make NumPy
        # convert the whole matrix on every product (about 5x slower).
        queries = queries.astype(np.float32)

        hnsw_t, exact_t, flat_t, recall = [], [], [], []
        default_t, default_exact = [], 0
        filtered = {"ten": [], "one": []}
        full_pages = {"ten": 0, "one": 0}
        exact_pages = {"ten": 0, "one": 0}
        filtered_t = {"ten": [], "one": []}
        for i, q in enumerate(queries):
            with override_settings(
                SHOP_SEARCH={**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 0}
            ):  # the HNSW index, whatever the catalog's size
                t0 = time.perf_counter()
                page = search.nearest(everything, q, limit=10)
                hnsw_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            default_exact += search.nearest(everything, q, limit=10).exact
            default_t.append(time.perf_counter() - t0)
            got = [h.object.pk for h in page]
            if i < 50 or n <= 100_000:
                with override_settings(
                    SHOP_SEARCH={**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 10**12}
                ):  # the same call ranking every product exactly
                    t0 = time.perf_counter()
                    exact_page = search.nearest(everything, q, limit=10)
                    exact_t.append(time.perf_counter() - t0)
                assert exact_page.exact
                truth = [h.object.pk for h in exact_page]
                recall.append(len(set(got) & set(truth)) / 10)
            if matrix is not None:
                t0 = time.perf_counter()
                scores = matrix @ q
                np.argpartition(-scores, 10)[:10]
                flat_t.append(time.perf_counter() - t0)
            if i < 50:
                for colour in ("ten", "one"):
                    # As the API filters (?colour=one): colour__iexact.
                    subset = everything.filter(colour__iexact=colour)
                    t0 = time.perf_counter()
                    fpage = search.nearest(subset, q, limit=10)
                    filtered_t[colour].append(time.perf_counter() - t0)
                    full_pages[colour] += len(fpage) == 10
                    exact_pages[colour] += fpage.exact
                    ftruth = exact_ids(subset, q)
                    filtered[colour].append(
                        len({h.object.pk for h in fpage} & set(ftruth)) / 10
                    )
        filtered_n = min(50, len(queries))
        h50, h99 = percentiles(hnsw_t)
        e50, e99 = percentiles(exact_t)
        f50 = percentiles(flat_t)[0] if flat_t else float("nan")
        lines.append(
            f"| {n:,} | {load_s:.0f} | {build_s:.1f} | {index_bytes / 2**20:.0f} "
            f"| {h50:.1f} / {h99:.1f} | {e50:.1f} / {e99:.1f} | {f50:.1f} "
            f"| {e50 / h50:.0f}x | {np.mean(recall):.3f} "
            f"| {np.mean(filtered['ten']):.3f} / {np.mean(filtered['one']):.3f} "
            f"| {full_pages['ten']}/{filtered_n} / {full_pages['one']}/{filtered_n} |"
        )
        sys.stdout.write(lines[-1] + "\n")
        filter_notes.append(
            f"{n:,} products: unfiltered p50 {percentiles(default_t)[0]:.1f} ms, "
            f"ranked exactly {default_exact}/{len(queries)}; filtered p50 "
            f"{percentiles(filtered_t['ten'])[0]:.1f} ms (10%) / "
            f"{percentiles(filtered_t['one'])[0]:.1f} ms (1%), ranked exactly "
            f"{exact_pages['ten']}/{filtered_n} (10%), "
            f"{exact_pages['one']}/{filtered_n} (1%)."
        )

        if n == 100_000 or n == max(args.sizes):
            for precision in args.precisions:
                with override_settings(
                    SHOP_SEARCH={**settings.SHOP_SEARCH, "PRECISION": precision}
                ):
                    e2e_lines.append(end_to_end(n, precision, args.queries))

    # halfvec against vector storage, on (up to) 100k of the rows: at 1M the
    # vector graph outgrows 2 GB of maintenance_work_mem and takes very long.
    compare = min(max(args.sizes), 100_000)
    with connection.cursor() as cursor:
        for table, cast in (
            ("scale_halfvec", "halfvec(512)"),
            ("scale_vector", "vector(512)"),
        ):
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(
                f"CREATE TABLE {table} AS SELECT id, vector::{cast} AS v "
                f"FROM shop_search_imagevector LIMIT {compare}"
            )
        sizes = {}
        for table in ("scale_halfvec", "scale_vector"):
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            sizes[table] = cursor.fetchone()[0]
    half_build, half_index = build_index(
        "halfvec_ip_ops", "scale_halfvec", "scale_halfvec_hnsw", "v"
    )
    vector_build, vector_index = build_index(
        "vector_ip_ops", "scale_vector", "scale_vector_hnsw", "v"
    )
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE scale_halfvec")
        cursor.execute("DROP TABLE scale_vector")
    lines += [
        "",
        f"Storage, {compare:,} vectors: `halfvec(512)` table "
        f"{sizes['scale_halfvec'] / 2**20:.0f} MB, HNSW built in {half_build:.1f} s, "
        f"{half_index / 2**20:.0f} MB; `vector(512)` table "
        f"{sizes['scale_vector'] / 2**20:.0f} MB, HNSW built in {vector_build:.1f} s, "
        f"{vector_index / 2**20:.0f} MB.",
        "",
        "With the default settings (`EXACT_SCAN_THRESHOLD` "
        f"{shop_search_settings.EXACT_SCAN_THRESHOLD:,}: a query whose "
        "candidates PostgreSQL estimates at that many or fewer is ranked exactly; "
        "the HNSW and plain recall@10 columns force the index, the filtered "
        "columns use the defaults): " + " ".join(filter_notes),
        *e2e_lines,
    ]
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section("Search at scale", report)


if __name__ == "__main__":
    main()
