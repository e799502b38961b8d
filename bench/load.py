"""
Sustained load: concurrent clients sending text queries to a running server.

Starts the server on 127.0.0.1 with the benchmark database: gunicorn as
docs/deployment.md runs it (``--workers`` processes of ``--threads`` threads,
the ``gthread`` worker), or ``manage.py runserver --noreload`` (one threaded
process) with ``--server runserver``. Then CLIENTS threads send queries for
SECONDS seconds and count answers, errors and latency. Runs three times per
precision: queries from a pool of 60 (so some repeat, as in a shop, and the
result cache answers them), every query unique (each one encoded and
searched), and one client alone sending unique queries (the sequential
latency). The catalog is the demo's plus ``--catalog`` synthetic products
(see search_scale.py; 0 drops them).

    .venv/bin/python bench/load.py --clients 8 --seconds 20 --catalog 100000
    .venv/bin/python bench/load.py --size tiny --catalog 0 --precisions fp32

Writes the section "Load" of BENCHMARKS.md ("Load (tiny models)" with
``--size tiny``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from importlib.util import find_spec

from _setup import (
    ROOT,
    build_index,
    configure,
    drop_synthetic,
    machine,
    percentiles,
    shared_buffers,
    write_section,
)

#: Per run: (row label, clients (None: --clients), unique queries).
RUNS = [
    ("pool of 60 (result cache on, the default)", None, False),
    ("all unique (every query encoded)", None, True),
    ("all unique, 1 client (sequential)", 1, True),
]

WORDS = [
    "red",
    "blue",
    "green",
    "black",
    "dress",
    "Kleid",
    "chaise",
    "红色",
    "лампа",
    "bolso",
    "mug",
    "sofa",
    "hat",
    "boots",
    "table",
    "vase",
]


def run(port: int, clients: int, seconds: float, unique: bool, start: int = 0) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    # Each run's unique queries are new to the server (no vector cached).
    counter = iter(range(start, 10**9))

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            n = next(counter)
            key = n if unique else n % 60
            query = f"{WORDS[key % 16]} {WORDS[(key // 16) % 16]} {key}"
            path = "/api/search/?" + urllib.parse.urlencode({"q": query, "limit": 24})
            t0 = time.perf_counter()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and "results" in json.loads(body)
            except Exception as exc:  # noqa: BLE001 - counted as an error
                ok = False
                body = repr(exc).encode()
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors.append(body[:200].decode(errors="replace"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    p50, p99 = percentiles(latencies) if latencies else (float("nan"),) * 2
    return {
        "ok": len(latencies),
        "errors": len(errors),
        "qps": len(latencies) / wall,
        "p50": p50,
        "p99": p99,
        "sample_error": errors[:1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--catalog", type=int, default=100_000)
    parser.add_argument(
        "--server",
        choices=["auto", "gunicorn", "runserver"],
        default="auto",
        help="auto: gunicorn when installed (requirements.txt), else runserver",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument(
        "--threads", type=int, default=4, help="gunicorn threads per process"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16", "int8"],
        default=["fp32", "int8"],
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.server == "auto":
        args.server = "gunicorn" if find_spec("gunicorn") else "runserver"
    configure(args.size)
    from django.core.management import call_command

    if not args.catalog:
        # The demo catalog alone, whatever search_scale.py left (the tables
        # first: on a new database nothing has created them yet).
        call_command("migrate", verbosity=0)
        drop_synthetic()
    call_command("demo", "--no-serve", verbosity=0)
    from django.db import connection
    from search_scale import load_rows

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product WHERE sku LIKE 'SCALE-%%'")
        synthetic = cursor.fetchone()[0]
    if synthetic != args.catalog:
        load_rows(args.catalog)
        build_index()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM catalog_product")
        products = cursor.fetchone()[0]
    results = {
        precision: serve_and_load(args, precision) for precision in args.precisions
    }
    if args.server == "gunicorn":
        server = (
            f"gunicorn, {args.workers} processes x {args.threads} threads "
            f"(`{' '.join(gunicorn_command(args, shown=True))}`, see "
            f"docs/deployment.md)"
        )
    else:
        server = "`manage.py runserver --noreload` (one threaded process)"
    lines = [
        f"Machine: {machine()}. Server: {server}, DEBUG off, cache "
        f"{cache_backend()}, embedded PostgreSQL with shared_buffers "
        f"{shared_buffers()}, `{args.size}` models, {products:,} products "
        f"(the demo's and {args.catalog:,} synthetic), {args.clients} client "
        f"threads for {args.seconds:.0f} s each run (one for the sequential one).",
        "",
        f"Command: `.venv/bin/python bench/load.py --size {args.size} "
        f"--clients {args.clients} --seconds {args.seconds:.0f} "
        f"--catalog {args.catalog} --server {args.server}"
        + (
            f" --workers {args.workers} --threads {args.threads}"
            if args.server == "gunicorn"
            else ""
        )
        + f" --precisions {' '.join(args.precisions)}`",
        "",
        "| precision | queries | answered/s | errors | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    errors = []
    for precision, runs in results.items():
        for (label, _clients, _unique), result in zip(RUNS, runs, strict=True):
            lines.append(
                f"| {precision} | {label} | {result['qps']:.1f} | "
                f"{result['errors']} | {result['p50']:.1f} | {result['p99']:.1f} |"
            )
            errors += result["sample_error"]
    if errors:
        lines.append(f"\nFirst error: `{errors[0]}`")
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        # The test models' run answers another question (the request
        # path's own cost) than the full-size one: each keeps its section.
        section = "Load" if args.size == "full" else f"Load ({args.size} models)"
        write_section(section, report)


def cache_backend() -> str:
    from django.conf import settings

    return settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]


def gunicorn_command(args: argparse.Namespace, *, shown: bool = False) -> list[str]:
    """The gunicorn command of docs/deployment.md, on the benchmark's port."""
    return [
        "gunicorn" if shown else sys.executable,
        *([] if shown else ["-m", "gunicorn"]),
        "demo_shop.wsgi:application",
        "--worker-class",
        "gthread",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--bind",
        f"127.0.0.1:{args.port}",
    ]


def serve_and_load(args: argparse.Namespace, precision: str) -> list[dict]:
    """Start a server with ``precision``; one result per :data:`RUNS`."""
    env = {
        **os.environ,
        "SHOP_SEARCH_THROTTLE_OFF": "1",
        "DJANGO_DEBUG": "0",
        "SHOP_SEARCH_PRECISION": precision,
    }
    if args.server == "gunicorn":
        # As docs/deployment.md says: a connection per thread, and the cores
        # shared between the processes' model runs.
        env.setdefault("DB_POOL_SIZE", str(args.threads))
        cores = os.cpu_count() or 1
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores // args.workers)))
        command = gunicorn_command(args)
    else:
        command = [
            sys.executable,
            "manage.py",
            "runserver",
            "--noreload",
            f"127.0.0.1:{args.port}",
        ]
    log_path = ROOT / ".bench-media" / "load-server.log"
    log_path.parent.mkdir(exist_ok=True)
    log = log_path.open("wb")
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        # runserver logs every request; a pipe nobody reads fills up after a
        # few hundred requests and then blocks the server, so log to a file.
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
                conn.request("GET", "/api/search/?q=warm+up")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit(f"The server did not answer; see {log_path}")
        # Every process loads its models at start (wsgi.py calls warm_up())
        # and measures the noise floors on its first search (two dozen
        # queries): let all of them do so before anything is measured.
        run(args.port, args.clients, max(3.0, args.seconds / 4), True, 10**8)
        results = []
        for number, (_label, clients, unique) in enumerate(RUNS):
            results.append(
                run(
                    args.port,
                    clients or args.clients,
                    args.seconds,
                    unique=unique,
                    start=number * 10**7,
                )
            )
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return results


if __name__ == "__main__":
    main()
