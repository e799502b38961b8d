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
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


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
