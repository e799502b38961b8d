"""
Where the image vectors live: shop_search's own tables (``ImageVector``, a
row per image; ``IndexEntry``, a row per product) against the columns on
the product table that held them up to commit 09ad2fe, at catalog scale.

One worker process per catalog, each with its own embedded PostgreSQL: the
code of commit 09ad2fe (a git worktree, ``--old-root``), vectors in the
product table's columns; and this tree with 1 and with 3 images per product
(``--images``). The catalogs hold the same products, names and first images
(``search_scale.synthetic_vectors``, ``hybrid.write_documents``). The driver
times the same queries in every worker, batch by batch in rotating order,
so that the noise of a shared machine falls on all of them alike:

- text search (``search_text``, 24 results, query vectors cached, ranking
  cache off) and image search (``nearest``, 24 results);
- over the visible products (unfiltered), over every row (no filter at
  all), and filtered to 10% and 1% of the products (``colour__iexact``, as
  the API filters), with ``EXACT_SCAN_THRESHOLD`` as shipped;
- recall@10 of image search against an exact ranking (every candidate's
  every image), full pages, and how many of today's top 10 text results
  the new storage returns.

    git worktree add ../wt-old 09ad2fe && ln -s "$PWD/.venv" ../wt-old/.venv
    .venv/bin/python bench/storage.py --products 100000 --old-root ../wt-old

The databases (under ``--data``) are kept and reused when they already hold
the catalog. Writes the section "Storage: shop_search's tables against
product columns" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import (
    ROOT,
    every_request_searches,
    machine,
    percentiles,
    size_shared_buffers,
    write_section,
)

SECTION = "Storage: shop_search's tables against product columns"
LIMIT = 24
SETS = ["unfiltered", "10%", "1%", "all rows"]


# --- the worker: one catalog, one tree ----------------------------------------------


def configure_tree(root: Path, pgdata: str, size: str) -> None:
    """_setup.configure for the code of ``root`` (another tree's shop_search),
    with this tree's test models, so that every worker encodes alike."""
    sys.path.insert(0, str(root))
    os.environ["SHOP_SEARCH_PGDATA"] = pgdata
    os.environ["DEMO_MEDIA_ROOT"] = pgdata + "-media"
    os.environ.pop("DATABASE_URL", None)
    from shop_search.testing import build_test_models

    paths = build_test_models(ROOT / ".models", size=size)
    os.environ["SHOP_SEARCH_IMAGE_MODEL"] = str(Path(paths.image).resolve())
    os.environ["SHOP_SEARCH_TEXT_MODEL"] = str(Path(paths.text).resolve())
    os.environ["DJANGO_SETTINGS_MODULE"] = "demo_shop.settings"
    size_shared_buffers(Path(pgdata))
    import django

    django.setup()


def load_columns(n: int, seed: int = 0) -> float:
    """search_scale.load_rows for the layout up to 09ad2fe: the vector in the
    product table's ``search_embedding`` column. Returns seconds."""
    from django.db import connection
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector
    from search_scale import synthetic_vectors

    from demo_shop.catalog.models import Category
    from shop_search.models import serving

    category, _ = Category.objects.get_or_create(name="Scale", slug="scale")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS catalog_product_emb")
        cursor.execute("DELETE FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        cursor.execute(
            "CREATE TEMP TABLE scale_rows (n integer, emb halfvec(512)) "
            "ON COMMIT PRESERVE ROWS"
        )
        raw = cursor.connection
        register_vector(raw)
        with raw.cursor().copy(
            "COPY scale_rows (n, emb) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "halfvec"])
            for start, _k, block in synthetic_vectors(n, seed, 1):
                for i, vector in enumerate(block):
                    copy.write_row((start + i, HalfVector(vector)))
        cursor.execute(
            """
            INSERT INTO catalog_product (sku, name, name_translations, description,
                price, currency, category_id, colour, image, in_stock, created_at,
                updated_at, search_embedding, search_model, search_fingerprint,
                search_error, search_attempts, search_indexed_at)
            SELECT 'SCALE-' || n, 'Synthetic ' || n, '{}', '', (n %% 500) + 1, 'EUR',
                   %s, CASE WHEN n %% 100 = 0 THEN 'one'
                            WHEN n %% 10 = 0 THEN 'ten' ELSE 'common' END,
                   'products/synthetic.png', true, now(), now(), emb, %s,
                   md5('products/synthetic.png'), '', 0, now()
              FROM scale_rows
            """,
            [category.pk, serving().image_model],
        )
        cursor.execute("DROP TABLE scale_rows")
        cursor.execute("VACUUM ANALYZE catalog_product")
    return time.perf_counter() - started


def _built(cursor) -> dict | None:
    cursor.execute(
        "CREATE TABLE IF NOT EXISTS bench_storage (products integer, images "
        "integer, load_s float, build_s float)"
    )
    cursor.execute("SELECT products, images, load_s, build_s FROM bench_storage")
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip(["products", "images", "load_s", "build_s"], row, strict=True))


def prepare(products: int, images: int, columns: bool) -> dict:
    """Build the catalog, unless the database already holds it."""
    from _setup import build_index
    from django.core.management import call_command
    from django.db import connection
    from hybrid import write_documents

    with connection.cursor() as cursor:
        built = _built(cursor)
    if built and (built["products"], built["images"]) == (products, images):
        return built
    call_command("demo", "--no-serve", verbosity=0)
    if columns:
        load_s = load_columns(products)
    else:
        from search_scale import load_rows

        load_s = load_rows(products, images=images)
    # Names first: with the HNSW index on the product table (old columns),
    # renaming every row would insert every row into the graph again.
    write_documents(columns=columns)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE catalog_product")
    if columns:
        build_s, _ = build_index(
            table="catalog_product",
            name="catalog_product_emb",
            column="search_embedding",
        )
    else:
        from search_scale import build_vector_index

        build_s, _ = build_vector_index()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM bench_storage")
        cursor.execute(
            "INSERT INTO bench_storage VALUES (%s, %s, %s, %s)",
            [products, images, load_s, build_s],
        )
        return _built(cursor)


def sizes(columns: bool) -> dict:
    from django.db import connection

    table, index = (
        ("catalog_product", "catalog_product_emb")
        if columns
        else ("shop_search_imagevector", "shop_search_vector_hnsw")
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        products = cursor.fetchone()[0]
        cursor.execute(
            "SELECT pg_total_relation_size(%s) - pg_relation_size(%s), "
            "pg_relation_size(%s)",
            [table, index, index],
        )
        table_bytes, index_bytes = cursor.fetchone()
        vectors = products
        if not columns:
            cursor.execute("SELECT count(*) FROM shop_search_imagevector")
            vectors = cursor.fetchone()[0]
    return {
        "products": products,
        "vectors": vectors,
        "table": table,
        "table_mb": table_bytes / 2**20,
        "index_mb": index_bytes / 2**20,
    }


def query_texts(count: int) -> list[str]:
    from hybrid import COLOURS, NOUNS, PATTERNS

    return [
        f"{COLOURS[i % 8]} {NOUNS[(i * 5) % 9]}"
        if i % 3
        else f"{COLOURS[i % 8]} {PATTERNS[i % 5]} {NOUNS[(i * 5) % 9]} m{i % 997}"
        for i in range(count)
    ]


def query_vectors(products: int, count: int, columns: bool):
    """Image queries: the first images of ``count`` products (the same in
    every catalog), moved a little."""
    import numpy as np
    from django.db import connection
    from search_scale import DIMS, _array

    from shop_search.models import serving

    numbers = np.random.default_rng(1).choice(products, count, replace=False)
    skus = [f"SCALE-{n}" for n in numbers]
    if columns:
        sql = "SELECT sku, search_embedding FROM catalog_product WHERE sku = ANY(%s)"
        params = [skus]
    else:
        sql = (
            "SELECT p.sku, v.vector FROM catalog_product p "
            "JOIN shop_search_imagevector v ON v.object_pk = p.id::text "
            "AND v.position = 0 AND v.image_model = %s WHERE p.sku = ANY(%s)"
        )
        params = [serving().image_model, skus]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = {sku: _array(vector) for sku, vector in cursor.fetchall()}
    vectors = np.stack([found[sku] for sku in skus])
    noise = np.random.default_rng(2).normal(size=vectors.shape).astype(np.float32)
    vectors = vectors + 0.3 * noise / np.sqrt(DIMS)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def worker(args: argparse.Namespace) -> None:
    """Build (or reuse) one catalog, then answer the driver's commands, one
    JSON line each, on stdout (everything else goes to stderr)."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    configure_tree(Path(args.root).resolve(), args.pgdata, args.size)

    from django.conf import settings
    from django.test.utils import override_settings

    from demo_shop.catalog.models import Product
    from shop_search import search
    from shop_search.models import serving

    every_request_searches()
    columns = any(f.name == "search_embedding" for f in Product._meta.get_fields())
    built = prepare(args.products, args.images, columns)
    current = serving()
    texts = query_texts(args.queries)
    for text in texts:  # cached: rankings are timed, not the encoder
        search.text_vector(text, current.text_encoder)
    vectors = query_vectors(args.products, args.queries, columns)
    visible = search.visible_products()
    querysets = {
        "unfiltered": visible,
        "10%": visible.filter(colour__iexact="ten"),
        "1%": visible.filter(colour__iexact="one"),
        "all rows": Product.objects.all(),
    }

    def run(kind: str, name: str, index: int):
        queryset = querysets[name]
        if kind == "text":
            return search.search_text(
                queryset, texts[index], current=current, limit=LIMIT
            )
        return search.nearest(
            queryset, vectors[index], limit=LIMIT, image_model=current.image_model
        )

    def answer(payload: dict) -> None:
        protocol.write(json.dumps(payload) + "\n")

    answer({"ready": True, "columns": columns, **built, **sizes(columns)})
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        if op == "run":
            times, pages = [], []
            for index in command["queries"]:
                started = time.perf_counter()
                page = run(command["kind"], command["set"], index)
                times.append(time.perf_counter() - started)
                pages.append([hit.object.sku for hit in page])
            answer({"times": times, "pages": pages})
        elif op == "truth":
            with override_settings(
                SHOP_SEARCH={
                    **settings.SHOP_SEARCH,
                    "EXACT_SCAN_THRESHOLD": 10**12,
                    "STATEMENT_TIMEOUT": 600,
                }
            ):  # every candidate's every image, ranked exactly (seconds each)
                pages = []
                for index in command["queries"]:
                    page = run("image", command["set"], index)
                    assert page.exact
                    pages.append([hit.object.sku for hit in page][:10])
            answer({"pages": pages})


# --- the driver -----------------------------------------------------------------


class Worker:
    """A worker process and its line protocol."""

    def __init__(self, label: str, root: Path, images: int, args, data: Path):
        self.label = label
        self.log = data / f"{label.replace(' ', '-').replace(',', '')}.log"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--root",
            str(root),
            "--pgdata",
            str(data / f"pgdata-{'old' if root != ROOT else 'new'}-{images}"),
            "--images",
            str(images),
            "--products",
            str(args.products),
            "--queries",
            str(args.queries),
            "--size",
            args.size,
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("a"),
            text=True,
            cwd=ROOT,
        )
        self.info = self.receive()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} stopped; see {self.log}")
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write('{"op": "quit"}\n')
            self.process.stdin.flush()
            self.process.wait(timeout=120)


def recall(pages: list[list[str]], truths: list[list[str]]) -> float:
    """Mean share of each truth's top 10 in the page's top 10 (the first
    ``len(truths)`` pages); an empty truth counts as met by an empty page."""
    found = [
        len(set(p[:10]) & set(t[:10])) / len(t[:10]) if t else float(not p)
        for p, t in zip(pages[: len(truths)], truths, strict=True)
    ]
    return sum(found) / len(found)


def driver(args: argparse.Namespace) -> None:
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    old_root = Path(args.old_root).resolve()
    specs = [("old columns", old_root, 1)] + [
        (f"new, {n} image{'s' if n > 1 else ''}", ROOT, n) for n in args.images
    ]
    workers = []
    try:
        for label, root, images in specs:  # one after another: builds are heavy
            started = time.perf_counter()
            workers.append(Worker(label, root, images, args, data))
            sys.stderr.write(
                f"{label}: ready in {time.perf_counter() - started:.0f} s "
                f"{workers[-1].info}\n"
            )
        report = measure(workers, args)
    finally:
        for w in workers:
            w.close()
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section(SECTION, report)


def measure(workers: list[Worker], args: argparse.Namespace) -> str:
    queries = list(range(args.queries))
    cells = [(kind, name) for name in SETS for kind in ("text", "image")]
    times = {(w.label, c): [] for w in workers for c in cells}
    pages = {(w.label, c): [] for w in workers for c in cells}
    for w in workers:  # warm caches and connections; not timed
        for kind, name in cells:
            w.ask(op="run", kind=kind, set=name, queries=queries[:10])
    batches = [queries[i : i + args.batch] for i in range(0, len(queries), args.batch)]
    for b, batch in enumerate(batches):
        order = workers[b % len(workers) :] + workers[: b % len(workers)]
        for cell in cells:
            for w in order:
                got = w.ask(op="run", kind=cell[0], set=cell[1], queries=batch)
                times[w.label, cell] += got["times"]
                pages[w.label, cell] += got["pages"]
        sys.stderr.write(f"batch {b + 1}/{len(batches)}\n")
    # Kept before the slow part: the exact rankings of every candidate.
    (Path(args.data) / "timings.json").write_text(
        json.dumps({f"{k[0]}|{k[1][0]}|{k[1][1]}": v for k, v in times.items()})
    )
    truth_queries = queries[: args.recall_queries]
    truths = {}
    for w in workers:
        for name in SETS[:3]:
            truths[w.label, name] = w.ask(op="truth", set=name, queries=truth_queries)[
                "pages"
            ]
    return render(workers, args, times, pages, truths)


def render(workers, args, times, pages, truths) -> str:
    old = workers[0].label
    labels = [w.label for w in workers]
    lines = [
        f"Machine: {machine()} (`lscpu`: "
        f"{_lscpu_model()}); shared with other benchmarks, so only figures "
        f"taken side by side in this run compare. Date: "
        f"{datetime.date.today().isoformat()}. Models: `{args.size}`.",
        "",
        f"{args.products:,} synthetic products (plus the demo's) in each of "
        f"{len(workers)} embedded PostgreSQL 18 + pgvector 0.8 databases: "
        f"**{old}** is the code of commit 09ad2fe (vectors in the product "
        f"table's columns, HNSW on `catalog_product.search_embedding`); the "
        f"others are this tree (`ImageVector` rows, HNSW on "
        f"`shop_search_vector_hnsw`, best image per family). Same products, "
        f"names and first images everywhere. {args.queries} queries per cell, "
        f"in batches of {args.batch} taken in rotating order across the "
        f"databases; text queries' vectors cached, ranking cache off, "
        f"{LIMIT} results a page, `EXACT_SCAN_THRESHOLD` as shipped. "
        f"*unfiltered*: the visible products (`visible_products()`: "
        f"`is_published=True` in this tree, every product at 09ad2fe); "
        f"*all rows*: `Product.objects.all()` (no WHERE, so no candidate "
        f"filter); 10% / 1%: `colour__iexact` on top of the visible products.",
        "",
        "Command: `.venv/bin/python bench/storage.py --products "
        f"{args.products} --images {' '.join(map(str, args.images))} "
        f"--queries {args.queries} --recall-queries {args.recall_queries} "
        f"--old-root {args.old_root}`",
        "",
        "| storage | products | vectors | table MB (no HNSW) | HNSW MB "
        "| HNSW build s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in workers:
        i = w.info
        lines.append(
            f"| {w.label} | {i['products']:,} | {i['vectors']:,} | "
            f"{i['table_mb']:.0f} (`{i['table']}`) | {i['index_mb']:.0f} | "
            f"{i['build_s']:.0f} |"
        )
    header = " | ".join(f"{label} p50 / p99 ms" for label in labels)
    ratios = " | ".join(f"{label} / old p50" for label in labels[1:])
    lines += [
        "",
        f"| search | filter | {header} | {ratios} |",
        "| --- | --- |" + " ---: |" * (len(labels) + len(labels) - 1),
    ]
    for name in SETS:
        for kind in ("text", "image"):
            cell = (kind, name)
            stats = [percentiles(times[label, cell]) for label in labels]
            row = " | ".join(f"{p50:.1f} / {p99:.1f}" for p50, p99 in stats)
            rel = " | ".join(f"{s[0] / stats[0][0]:.2f}x" for s in stats[1:])
            what = "text (`search_text`)" if kind == "text" else "image (`nearest`)"
            lines.append(f"| {what} | {name} | {row} | {rel} |")
    n_truth = len(next(iter(truths.values())))
    lines += [
        "",
        f"Recall@10 of image search against the exact ranking (first "
        f"{n_truth} queries), full pages ({LIMIT} results) over all "
        f"{args.queries} queries, and the share of the old storage's text top "
        f"10 that each returns:",
        "",
        "| storage | image recall@10 unfiltered / 10% / 1% | full pages text "
        "unfiltered / 10% / 1% | full pages image unfiltered / 10% / 1% "
        "| text top 10 shared with old, unfiltered / 10% / 1% |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label in labels:
        rec = " / ".join(
            f"{recall(pages[label, ('image', n)], truths[label, n]):.3f}"
            for n in SETS[:3]
        )
        full = {
            kind: " / ".join(
                f"{sum(len(p) == LIMIT for p in pages[label, (kind, n)])}"
                f"/{len(pages[label, (kind, n)])}"
                for n in SETS[:3]
            )
            for kind in ("text", "image")
        }
        shared = " / ".join(
            f"{recall(pages[label, ('text', n)], pages[old, ('text', n)]):.3f}"
            for n in SETS[:3]
        )
        lines.append(
            f"| {label} | {rec} | {full['text']} | {full['image']} | {shared} |"
        )
    return "\n".join(lines)


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=50,
        help="queries ranked exactly too (at 100,000 products x 3 images, "
        "seconds each)",
    )
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument(
        "--old-root", default="../wt-old", help="a checkout of commit 09ad2fe"
    )
    parser.add_argument(
        "--data",
        default=str(Path(tempfile.gettempdir()) / "shop_search-bench-storage"),
        help="where the databases are kept between runs",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--pgdata", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.images = args.images[0]
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
