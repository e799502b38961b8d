from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db import DatabaseError, connections
from django.db.models.signals import pre_migrate

logger = logging.getLogger(__name__)


class ShopSearchConfig(AppConfig):
    name = "shop_search"
    verbose_name = "Shop search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
        from .registry import on_change
        from .signal_handlers import connect_signals

        connect_signals()
        # Models registered later (other apps' ready()) connect then.
        on_change(connect_signals)
        pre_migrate.connect(
            create_vector_extension,
            sender=self,
            dispatch_uid="shop_search.create_vector_extension",
        )


def create_vector_extension(using: str = "default", **kwargs: Any) -> None:
    """Create pgvector before any migration adds an embedding column."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        if cursor.fetchone():
            return
        try:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except DatabaseError as exc:
            raise DatabaseError(
                f"shop_search could not create the pgvector extension in database "
                f"{using!r}: {exc}. Ask a superuser to run "
                f"'CREATE EXTENSION IF NOT EXISTS vector;' in that database, or "
                f"install pgvector on the server (see 'manage.py check --database "
                f"{using}')."
            ) from exc
