"""
Sustained load: concurrent clients sending text queries to a running server.

Starts `manage.py runserver --noreload` (threaded) on 127.0.0.1 with the
benchmark database, then runs CLIENTS threads for SECONDS seconds, each
sending queries from a pool of 60 (so some repeat, as in a shop), and counts
answers, errors and latency. Runs twice per precision: with the default
result cache, and with every query unique (nothing cached). The catalog is the
demo's plus ``--catalog`` synthetic products (see search_scale.py).

    .venv/bin/python bench/load.py --clients 8 --seconds 20 --catalog 100000

Writes the section "Load" of BENCHMARKS.md.
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

from _setup import (
    ROOT,
    build_index,
    configure,
    machine,
    percentiles,
    shared_buffers,
    write_section,
)

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


def run(port: int, clients: int, seconds: float, unique: bool) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            n = next(counter)
            key = n if unique else n % 60
            query = f"{WORDS[key % 16]} {WORDS[(key * 7) % 16]} {key}"
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
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16", "int8"],
        default=["fp32", "int8"],
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    configure(args.size)
    from django.core.management import call_command

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
    lines = [
        f"Machine: {machine()}. Server: `manage.py runserver --noreload` (one "
        f"threaded process, DEBUG off), embedded PostgreSQL with shared_buffers "
        f"{shared_buffers()}, full-size models, {products:,} products "
        f"(the demo's and {args.catalog:,} synthetic), {args.clients} client "
        f"threads for {args.seconds:.0f} s each run.",
        "",
        f"Command: `.venv/bin/python bench/load.py --clients {args.clients} "
        f"--seconds {args.seconds:.0f} --catalog {args.catalog} "
        f"--precisions {' '.join(args.precisions)}`",
        "",
        "| precision | queries | answered/s | errors | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    errors = []
    for precision, (cached, unique) in results.items():
        lines += [
            f"| {precision} | pool of 60 (result cache on, the default) | "
            f"{cached['qps']:.1f} | {cached['errors']} | {cached['p50']:.0f} | "
            f"{cached['p99']:.0f} |",
            f"| {precision} | all unique (every query encoded) | "
            f"{unique['qps']:.1f} | {unique['errors']} | {unique['p50']:.0f} | "
            f"{unique['p99']:.0f} |",
        ]
        errors += [e for r in (cached, unique) for e in r["sample_error"]]
    if errors:
        lines.append(f"\nFirst error: `{errors[0]}`")
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section("Load", report)


def serve_and_load(args: argparse.Namespace, precision: str) -> tuple[dict, dict]:
    """Start a server with ``precision``; the cached run, then the unique one."""
    env = {
        **os.environ,
        "SHOP_SEARCH_THROTTLE_OFF": "1",
        "DJANGO_DEBUG": "0",
        "SHOP_SEARCH_PRECISION": precision,
    }
    log_path = ROOT / ".bench-media" / "load-server.log"
    log_path.parent.mkdir(exist_ok=True)
    log = log_path.open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runserver",
            "--noreload",
            f"127.0.0.1:{args.port}",
        ],
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
        cached = run(args.port, args.clients, args.seconds, unique=False)
        unique = run(args.port, args.clients, args.seconds, unique=True)
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    return cached, unique


if __name__ == "__main__":
    main()
