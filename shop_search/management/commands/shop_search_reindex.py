from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import InterfaceError, OperationalError, connections

from shop_search.exceptions import ModelLoadError, ShopSearchError
from shop_search.indexing import (
    IndexResult,
    forget_deleted,
    index_objects,
    next_chunk,
    pending_queryset,
)

from ._common import progress_bar, selected_models

# Waits between attempts when the database goes away (a restart, a failover):
# about a minute in all before the command gives up.
RETRY_DELAYS = (1, 2, 4, 8, 15, 30)

#: The PostgreSQL advisory lock a run holds (any number no one else uses).
LOCK_KEY = 0x5350_5245_494E_4458  # "SPREINDX"


class Command(BaseCommand):
    help = (
        "Encode product images into the search index. By default only products "
        "that need it: missing, stale (image or model changed, also through "
        "QuerySet.update() or bulk_create) and failed-but-retryable. Safe to "
        "interrupt and re-run: finished products are not encoded again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--all", action="store_true", help="Re-encode every product.")
        mode.add_argument(
            "--stale",
            action="store_true",
            help="Only products that need it (the default).",
        )
        parser.add_argument(
            "--model",
            action="append",
            metavar="APP_LABEL.MODEL",
            help="Limit to this searchable model (repeatable).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Images per forward pass (default: SHOP_SEARCH['BATCH_SIZE']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from shop_search.conf import shop_search_settings

        batch_size = options["batch_size"]
        if batch_size is None:
            batch_size = shop_search_settings.BATCH_SIZE
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        lock = self.run_lock()
        try:
            self.reindex(batch_size, options)
        except KeyboardInterrupt:
            raise CommandError(
                "Interrupted. Every finished batch is kept: run the command "
                "again to go on (with --all it starts over).",
                returncode=130,
            ) from None
        finally:
            try:
                lock.close()  # the session ends, and its lock with it
            except Exception:  # noqa: BLE001 (the database went away: so did the lock)
                pass

    def run_lock(self) -> Any:
        """
        One run at a time per database: two (overlapping cron runs) would
        each encode nearly every pending product. The lock is a PostgreSQL
        advisory lock held by a connection of its own, outside Django's pool
        and untouched by the reconnects of :meth:`retrying`: it lasts as long
        as the run, and ends with it whatever happens.
        """
        import psycopg

        connection = connections["default"]
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        lock = psycopg.connect(**params, autocommit=True)
        row = lock.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()
        if not row[0]:
            lock.close()
            raise CommandError(
                "Another shop_search_reindex is running on this database; "
                "this one would repeat its work. Run it again when that one ends."
            )
        return lock

    def reindex(self, batch_size: int, options: dict[str, Any]) -> None:
        force = options["all"]
        verbosity = options["verbosity"]
        grand = IndexResult()
        started = time.monotonic()
        for model in selected_models(options["model"]):
            self.retrying(self.index_words, model, force, verbosity)
            self.retrying(forget_deleted, model)
            if force:
                queryset = model._base_manager.all()
            else:
                queryset = pending_queryset(model)
            total = queryset.count()
            label = model._meta.label
            if verbosity:
                what = "all" if force else "pending"
                self.stdout.write(f"{label}: {total} {what} product(s)")
            if not total:
                continue
            bar = progress_bar(total, label, self.stdout, verbosity)
            result = IndexResult()
            last = None
            try:
                # Several batches per call, so that decoding the next batch
                # overlaps with encoding this one; each batch still commits.
                chunk_size = batch_size * 8
                tracker = _Progress(bar)
                while pks := self.retrying(next_chunk, queryset, last, chunk_size):
                    chunk = self.retrying(
                        index_objects,
                        model,
                        pks,
                        force=force,
                        batch_size=batch_size,
                        progress=tracker.batch_done,
                        documents=False,  # done above for every product
                    )
                    result += chunk
                    last = pks[-1]
            except ModelLoadError as exc:
                raise CommandError(exc.message) from exc
            finally:
                if bar is not None:
                    bar.close()
            grand += result
            if verbosity:
                self.stdout.write(_summary(label, result))
        self.promote(verbosity)
        elapsed = time.monotonic() - started
        if verbosity:
            rate = grand.images / elapsed if elapsed > 0 else 0.0
            style = self.style.WARNING if grand.failed else self.style.SUCCESS
            self.stdout.write(
                style(
                    f"Done in {elapsed:.1f}s: {grand.encoded} encoded "
                    f"({grand.images} images, {rate:.1f} images/s), "
                    f"{grand.failed} failed, "
                    f"{grand.skipped} already current, {grand.cleared} cleared."
                )
            )
            if grand.failed:
                self.stdout.write(
                    "Failed products are retried by the next run; "
                    "see `manage.py shop_search_status` for reasons."
                )

    def index_words(self, model: Any, force: bool, verbosity: int) -> None:
        """Bring every product's words up to date (new, changed, deleted)."""
        from shop_search.indexing import index_documents

        label = model._meta.label
        total = model._base_manager.count()
        bar = progress_bar(total, f"{label} words", self.stdout, verbosity)
        try:
            result = index_documents(
                model,
                force=force,
                progress=(lambda n: bar.update(n)) if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.close()
        if verbosity:
            self.stdout.write(
                f"{label}: words of {result.written} product(s) written, "
                f"{result.current} current, {result.removed} removed"
            )

    def promote(self, verbosity: int) -> None:
        """End a model switch when every product has a vector of the new
        model; then rewrite the words' vectors with the new text model."""
        from shop_search.models import searchable_models
        from shop_search.switching import (
            in_transition,
            promote,
            promote_text_model,
            serving,
        )

        if not in_transition():
            try:
                old_text = self.retrying(promote_text_model)
            except ShopSearchError as exc:
                self.stderr.write(
                    self.style.ERROR(
                        f"TEXT_MODEL not switched, searches keep "
                        f"{serving().text_model}: {exc.message}"
                    )
                )
                return
            if old_text is not None:
                if verbosity:
                    self.stdout.write(
                        f"Switching the words' vectors from {old_text} to "
                        f"{serving().text_model}."
                    )
                for model in searchable_models():
                    self.retrying(self.index_words, model, False, verbosity)
            return
        old = serving().image_model
        try:
            switched = self.retrying(promote, searchable_models())
        except ShopSearchError as exc:
            raise CommandError(
                f"Searches not switched, they keep {old}: {exc.message}"
            ) from exc
        if verbosity and switched is not None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Switched searches from {old} to {serving().image_model}: "
                    f"{switched} product vectors replaced at once."
                )
            )
        if switched is not None:
            # The words' vectors were written by the old text model: the
            # meaning channel would find nothing until they are rewritten.
            for model in searchable_models():
                self.retrying(self.index_words, model, False, verbosity)
        elif verbosity:
            self.stdout.write(
                self.style.WARNING(
                    f"Searches still use {old}: some products have no vector of "
                    f"the new model yet (see shop_search_status)."
                )
            )

    def retrying(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``function``; if the database goes away, reconnect and call again."""
        for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
            try:
                return function(*args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                connections.close_all()
                if delay is None:
                    raise CommandError(
                        f"The database is unavailable ({exc}); gave up after "
                        f"{attempt} attempts. Everything finished so far is kept: "
                        f"run shop_search_reindex again to resume."
                    ) from exc
                self.stderr.write(
                    f"Database unavailable ({str(exc).strip()}); retrying in "
                    f"{delay}s (attempt {attempt} of {len(RETRY_DELAYS)})."
                )
                time.sleep(delay)
        raise AssertionError("unreachable")


class _Progress:
    """Advances the progress bar after every batch, with running counts."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.encoded = self.failed = 0

    def batch_done(self, batch: IndexResult) -> None:
        self.encoded += batch.encoded
        self.failed += batch.failed
        if self.bar is not None:
            self.bar.update(batch.processed)
            self.bar.set_postfix(encoded=self.encoded, failed=self.failed)


def _summary(label: str, result: IndexResult) -> str:
    return (
        f"{label}: {result.encoded} encoded, {result.failed} failed, "
        f"{result.skipped} already current, {result.cleared} cleared"
    )
