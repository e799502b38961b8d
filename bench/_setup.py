"""Shared set-up for the benchmarks: a separate database, media folder and models."""

from __future__ import annotations

import os
import platform
import statistics
import sys
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
    import django

    django.setup()
    return {"image": paths.image, "text": paths.text}


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
        cursor.execute("DROP INDEX IF EXISTS catalog_product_emb")
        cursor.execute("DELETE FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        deleted = cursor.rowcount
        cursor.execute("VACUUM ANALYZE catalog_product")
        cursor.execute(
            "CREATE INDEX catalog_product_emb ON catalog_product "
            "USING hnsw (search_embedding halfvec_ip_ops)"
        )
    return deleted


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
