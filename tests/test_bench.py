"""
A tiny-scale smoke run of every benchmark script: the code runs end to end and
prints its table. No timing is asserted; the figures live in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        SHOP_SEARCH_PGDATA=str(folder / "pgdata"),
        DEMO_MEDIA_ROOT=str(folder / "media"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("DATABASE_URL", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("indexing.py", ["--products", "6"], "| tutorial loop"),
        ("api_latency.py", ["--queries", "4"], "| text query, encoded"),
        ("search_scale.py", ["--sizes", "300", "--queries", "4"], "| 300 |"),
        ("hostile_corpus.py", [], "| API responses with status 500 | 0 |"),
        ("device_precision.py", ["--images", "8", "--rounds", "1"], "| auto |"),
        (
            "recall_tradeoff.py",
            ["--products", "300", "--queries", "4", "--ef", "40", "400"],
            "| 400 (default) |",
        ),
        (
            "load.py",
            [
                "--clients",
                "2",
                "--seconds",
                "2",
                "--catalog",
                "300",
                "--precisions",
                "int8",
            ],
            "| int8 | pool of 60",
        ),
    ],
)
def test_benchmark_script_runs(bench_env, script, args, expect):
    extra = ["--port", str(_free_port())] if script == "load.py" else []
    result = subprocess.run(
        [
            sys.executable,
            f"bench/{script}",
            "--size",
            "tiny",
            "--no-write",
            *args,
            *extra,
        ],
        cwd=ROOT,
        env=bench_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert expect in result.stdout, result.stdout[-2000:]
