"""Concurrent shoppers share a bounded connection pool; saturation is a 503."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def _get(url: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_eight_concurrent_shoppers_get_answers_not_errors(live_server, catalog):
    """Every query new (no cache helps), 8 clients at once, threaded server."""
    from shop_search.switching import warm_up

    warm_up()  # as the demo does before it serves

    def client(n: int) -> list[int]:
        codes = []
        for i in range(6):
            query = urllib.parse.urlencode({"q": f"dress {n} {i}", "limit": 5})
            path = "/api/search/" if i % 2 else "/search/"
            codes.append(_get(f"{live_server.url}{path}?{query}")[0])
        return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [code for codes in pool.map(client, range(8)) for code in codes]
    assert codes == [200] * 48
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
        (open_connections,) = cursor.fetchone()
    assert open_connections <= connection.pool.max_size + 1


def test_warm_up_leaves_every_pooled_connection_to_the_requests(catalog):
    """warm_up runs on a worker's start-up thread, which serves no request:
    the connection it reads the serving models with goes back to the pool
    (else a pool of DB_POOL_SIZE gave each worker's threads one fewer)."""
    from shop_search import read_cache
    from shop_search.switching import warm_up

    def held() -> int:
        stats = connection.pool.get_stats()
        return stats["pool_size"] - stats["pool_available"]

    read_cache.clear_all()  # warm_up reads the serving models from the database
    connection.close()
    before = held()  # (other threads of the test run may hold some)
    warm_up()
    assert held() == before  # none kept by warm_up
    # A connection the caller had open (its session state, say) stays open.
    read_cache.clear_all()
    connection.ensure_connection()
    warm_up()
    assert connection.connection is not None


def test_a_saturated_pool_answers_503_with_retry_after(live_server, catalog):
    from psycopg_pool import PoolTimeout

    pool = connection.pool
    held = []
    try:
        while True:
            held.append(pool.getconn(timeout=0.5))
    except PoolTimeout:
        pass
    try:
        status, headers, body = _get(f"{live_server.url}/api/search/?q=shoe")
        assert status == 503 and headers["Retry-After"] == "2"
        assert json.loads(body)["code"] == "database_unavailable"
        status, headers, body = _get(f"{live_server.url}/search/?q=shoe")
        assert status == 503 and "try again" in body
    finally:
        for conn in held:
            pool.putconn(conn)
    assert _get(f"{live_server.url}/api/search/?q=shoe")[0] == 200
