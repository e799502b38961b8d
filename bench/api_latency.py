"""
Latency of the storefront API on the demo catalog, in-process through DRF
(Django test client: URL routing, serializers, SQL, encoding; no network).

    .venv/bin/python bench/api_latency.py --size full --queries 100

``--size full`` uses the real architectures (CLIP ViT-B/32, 6-layer DistilBERT)
with random weights: speed does not depend on trained weights. ``--catalog N``
adds N synthetic products (see search_scale.py; 0, the default, drops them).

Besides the client's wall time per request, it reports the server time of a
text query whose vector is cached (Django's ``get_response``: middleware,
DRF, search, serialization, rendering; the test client's own work left out),
and where that time goes, phase by phase. Writes the section "API latency
(demo catalog)" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from _setup import (
    build_index,
    configure,
    drop_synthetic,
    every_request_searches,
    machine,
    percentiles,
    write_section,
)

MODELS = {
    "full": "real architectures, random weights",
    "tiny": "tiny test models",
}

QUERIES = [
    "red dress",
    "rotes Kleid",
    "红色连衣裙",
    "فستان أحمر",
    "красное платье",
    "लाल पोशाक",
    "blue striped chair",
    "chaussures noires",
    "mochila verde",
    "gelbe Lampe",
]

#: (label, "module:attribute") of the phases of a text search, in the order a
#: request meets them. A phase's time includes the phases it calls; those are
#: subtracted so that each row is its own share. A name that a refactoring
#: removed is skipped (the row says n/a), so the benchmark keeps running;
#: ``a|b`` names alternatives (before and after a change).
PHASES = [
    (
        "parse (parameter serializer)",
        "shop_search.api.views:s.TextSearchParamsSerializer.is_valid",
    ),
    ("serving models lookup (cached)", "shop_search.read_cache:serving"),
    (
        "candidate queryset (visibility, filters)",
        "shop_search.api.views:_SearchView.filtered_queryset",
    ),
    (
        "row estimate (exact scan or index?)",
        "shop_search.estimates:estimated_rows|shop_search.ranking:estimated_rows",
    ),
    ("image channel SQL (built)", "shop_search.search:image_channel_sql"),
    ("ranking SQL (every channel, one statement)", "shop_search.lexical:rank"),
    ("noise floors (cached)", "shop_search.calibration:noise_floors"),
    ("object fetch (in_bulk)", "django.db.models.query:QuerySet.in_bulk"),
    ("category suggestions", "shop_search.api.views:categories_module.for_query"),
    ("related objects (prefetch)", "shop_search.api.views:prefetch_related_objects"),
    (
        "serialize (PRODUCT_SERIALIZER)",
        "shop_search.api.views:_SearchView.serialize_hits",
    ),
    ("render JSON", "rest_framework.renderers:JSONRenderer.render"),
]


def _resolve(paths: str) -> tuple[Any, str] | None:
    """The object holding the attribute ``paths`` names (the first of its
    ``|``-separated alternatives that exists), and its name."""
    import importlib

    path, _, others = paths.partition("|")
    module_name, dotted = path.split(":")
    *parents, name = dotted.split(".")
    try:
        owner: Any = importlib.import_module(module_name)
        for part in parents:
            owner = getattr(owner, part)
        getattr(owner, name)
    except (AttributeError, ImportError):
        return _resolve(others) if others else None
    return owner, name


@contextmanager
def timed_phases(totals: Counter) -> Iterator[set[str]]:
    """Wrap each of :data:`PHASES` with a timer adding its own time (less
    the timed phases it calls) to ``totals``; yields the labels found."""
    stack: list[float] = []  # time spent in nested phases, per open phase
    patched: list[tuple[Any, str, Any]] = []
    found: set[str] = set()

    def wrap(label: str, function: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                inner = stack.pop()
                totals[label] += elapsed - inner
                if stack:
                    stack[-1] += elapsed

        return timed

    for label, path in PHASES:
        resolved = _resolve(path)
        if resolved is None:
            continue
        owner, name = resolved
        own = name in vars(owner)  # else inherited: delete the wrapper after
        patched.append((owner, name, vars(owner)[name] if own else None))
        setattr(owner, name, wrap(label, getattr(owner, name)))
        found.add(label)
    try:
        yield found
    finally:
        for owner, name, original in reversed(patched):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def server_times(
    client: Any, query: str, runs: int, url: str = "/api/search/"
) -> list[float]:
    """Seconds in Django's ``get_response`` for ``runs`` GETs of ``query``."""
    handler = client.handler
    samples: list[float] = []
    original = handler.get_response

    def get_response(request: Any) -> Any:
        started = time.perf_counter()
        response = original(request)
        samples.append(time.perf_counter() - started)
        return response

    handler.get_response = get_response
    try:
        for _ in range(runs):
            response = client.get(url, {"q": query})
            assert response.status_code == 200, response.content[:300]
    finally:
        del handler.get_response
    return samples


@contextmanager
def reference_views(page_pks: list[Any]) -> Iterator[None]:
    """
    Two views beside the project's URLs, to show what a search costs beyond
    what any API of the same stack pays: ``/bench/empty/`` (a DRF view that
    answers ``{}`` through the project's middleware), and ``/bench/page/``
    (the text search view's own product fetch and serialization of
    ``page_pks``, without searching).
    """
    import types

    from django.test import override_settings
    from django.urls import path
    from rest_framework.permissions import AllowAny
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from shop_search.api.views import TextSearchView
    from shop_search.ranking import Hit, Page

    class Empty(APIView):
        permission_classes = [AllowAny]

        def get(self, request: Any) -> Response:
            return Response({})

    class PageOnly(TextSearchView):
        def get(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            rows = self.filtered_queryset(request.query_params).in_bulk(page_pks)
            hits = [Hit(rows[pk], 1.0, ["name"]) for pk in page_pks if pk in rows]
            page = Page(hits=hits, limit=len(hits), offset=0, has_more=True)
            return Response(self.page_data(page))

    from django.conf import settings
    from django.utils.module_loading import import_string

    project = import_string(settings.ROOT_URLCONF + ".urlpatterns")
    urls = types.ModuleType("api_latency_urls")
    urls.urlpatterns = [
        path("bench/empty/", Empty.as_view()),
        path("bench/page/", PageOnly.as_view()),
        *project,
    ]
    sys.modules[urls.__name__] = urls
    try:
        with override_settings(ROOT_URLCONF=urls.__name__):
            yield
    finally:
        del sys.modules[urls.__name__]


def statements_per_request(client: Any, query: str) -> int:
    """Statements (each a round trip) one text query with its vector cached
    sends to the database, per-process caches warm."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get("/api/search/", {"q": query})
    with CaptureQueriesContext(connection) as captured:
        client.get("/api/search/", {"q": query})
    return len(captured.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    parser.add_argument(
        "--catalog", type=int, default=0, help="synthetic products to add"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import os

    os.environ["SHOP_SEARCH_PRECISION"] = args.precision
    # As deployed: with DEBUG on, Django would also record every statement.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    configure(args.size)

    from django.core.management import call_command

    # Every request searches; "repeated" rows then show the query-vector
    # cache alone.
    every_request_searches()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from demo_shop.catalog.models import Product
    from shop_search import search

    started = time.perf_counter()
    if args.catalog:
        call_command("demo", "--no-serve", verbosity=0)
        from django.db import connection
        from search_scale import load_rows

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM catalog_product WHERE sku LIKE 'SCALE-%%'"
            )
            synthetic = cursor.fetchone()[0]
        if synthetic != args.catalog:
            load_rows(args.catalog)
            build_index()
    else:
        # The demo catalog alone, whatever search_scale.py left (the tables
        # first: on a new database nothing has created them yet).
        call_command("migrate", verbosity=0)
        drop_synthetic()
        call_command("demo", "--no-serve", verbosity=0)
    setup = time.perf_counter() - started
    # As the demo's wsgi.py does at start: both models loaded and run once.
    from shop_search.switching import warm_up

    warm_up()
    client = Client()
    client.get("/api/search/", {"q": "warm up"})

    def timed(call) -> float:
        t0 = time.perf_counter()
        response = call()
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200, response.content[:300]
        return elapsed

    # unique queries: every one is encoded (cache cleared before each)
    cold = []
    for i in range(args.queries):
        search.query_cache.clear()
        q = QUERIES[i % len(QUERIES)]
        cold.append(timed(lambda q=q: client.get("/api/search/", {"q": q})))
    warm = [
        timed(lambda: client.get("/api/search/", {"q": "rotes Kleid"}))
        for _ in range(args.queries)
    ]
    # The request's own cost: the query vector is cached, so no model runs.
    server = server_times(client, "rotes Kleid", args.queries)
    phases: Counter = Counter()
    phase_runs = max(args.queries, 20)
    with timed_phases(phases) as found:
        phase_total = sum(server_times(client, "rotes Kleid", phase_runs))
    statements = statements_per_request(client, "rotes Kleid")
    page = client.get("/api/search/", {"q": "rotes Kleid"}).json()["results"]
    with reference_views([hit["product"]["id"] for hit in page]):
        client.get("/bench/page/", {"q": "rotes Kleid"})
        empty = server_times(client, "rotes Kleid", args.queries, "/bench/empty/")
        page_only = server_times(client, "rotes Kleid", args.queries, "/bench/page/")
    images = [p.image.read() for p in Product.objects.order_by("pk")[:20]]
    image_runs = []
    for i in range(max(10, args.queries // 4)):
        data = images[i % len(images)]
        image_runs.append(
            timed(
                lambda d=data: client.post(
                    "/api/search/image/",
                    {"image": SimpleUploadedFile("p.png", d, "image/png")},
                )
            )
        )
    look_runs = []
    for i in range(5):
        data = images[i % len(images)]
        look_runs.append(
            timed(
                lambda d=data: client.post(
                    "/api/search/image/",
                    {
                        "image": SimpleUploadedFile("p.png", d, "image/png"),
                        "group": "look",
                    },
                )
            )
        )

    rows = [
        ("text query, encoded (cache miss)", cold),
        ("text query, repeated (cache hit)", warm),
        ("text query, vector cached: server time (get_response)", server),
        (
            "for reference: the same page's products fetched and serialized, no search",
            page_only,
        ),
        ("for reference: an empty DRF view through the same middleware", empty),
        ("image query (PNG upload, 256 px)", image_runs),
        ("shop the look (detector + per-item search)", look_runs),
    ]
    lines = [
        f"Machine: {machine()}. Models: `{args.size}` ({MODELS[args.size]}), "
        f"precision {args.precision}. Result cache off (every request searches). "
        f"Catalog: {Product.objects.count()} products. Set-up (migrate, "
        f"load, index) took {setup:.1f} s.",
        "",
        "Command: `.venv/bin/python bench/api_latency.py --size "
        f"{args.size} --queries {args.queries} --precision {args.precision}"
        + (f" --catalog {args.catalog}" if args.catalog else "")
        + "`",
        "",
        "| request | n | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        lines.append(f"| {name} | {len(samples)} | {p50:.1f} | {p99:.1f} |")
    lines += [
        "",
        f"Where the server time of a text query with its vector cached goes "
        f"(mean of {phase_runs} requests, each phase without the phases it "
        f"calls; timers add a little):",
        "",
        "| phase | mean ms |",
        "| --- | ---: |",
    ]
    accounted = 0.0
    for label, _path in PHASES:
        if label not in found:
            lines.append(f"| {label} | n/a |")
            continue
        accounted += phases[label]
        lines.append(f"| {label} | {phases[label] / phase_runs * 1000:.2f} |")
    rest = (phase_total - accounted) / phase_runs * 1000
    lines += [
        f"| the rest (middleware, DRF dispatch, throttle, glue) | {rest:.2f} |",
        f"| **server time** | **{phase_total / phase_runs * 1000:.2f}** |",
        "",
        f"Statements sent to PostgreSQL per request (round trips): {statements}.",
    ]
    report = "\n".join(lines)
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_section(
            f"API latency (demo catalog, {args.size} models, {args.precision})", report
        )


if __name__ == "__main__":
    main()
