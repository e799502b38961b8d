from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count

from shop_search.encoders import image_model_id
from shop_search.models import IndexStatus, SearchDocument, status_q
from shop_search.switching import in_transition, serving, transition_progress

from ._common import selected_models


class Command(BaseCommand):
    help = (
        "Show, per searchable model, how many products are indexed, stale, "
        "failed or missing, and which embedding models produced the vectors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model",
            action="append",
            metavar="APP_LABEL.MODEL",
            help="Limit to this searchable model (repeatable).",
        )
        parser.add_argument(
            "--failures",
            type=int,
            default=10,
            metavar="N",
            help="List up to N failed products with their reasons (default 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        current = serving()
        self.stdout.write(f"Searches use: {current.image_model} / {current.text_model}")
        switching = in_transition()
        if switching:
            self.stdout.write(
                self.style.WARNING(
                    f"Switching to IMAGE_MODEL {image_model_id()}: run "
                    f"shop_search_reindex; searches move over when every product "
                    f"has a new vector."
                )
            )
        for model in selected_models(options["model"]):
            manager = model._base_manager
            self.stdout.write(self.style.MIGRATE_HEADING(f"\n{model._meta.label}"))
            total = manager.count()
            self.stdout.write(f"  {'total':<22}{total:>8}")
            if switching:
                done, needed = transition_progress(model)
                self.stdout.write(f"  {'new model vectors':<22}{done:>8} of {needed}")
            for status in IndexStatus:
                count = manager.filter(status_q(model, status)).count()
                self.stdout.write(f"  {status.label:<22}{count:>8}")
            words = SearchDocument.objects.filter(
                content_type=ContentType.objects.get_for_model(
                    model, for_concrete_model=False
                )
            )
            with_vector = words.filter(text_model=current.text_model).count()
            self.stdout.write(f"  {'with words':<22}{words.count():>8}")
            self.stdout.write(f"  {'with text vectors':<22}{with_vector:>8}")
            by_model = (
                manager.filter(search_embedding__isnull=False)
                .values("search_model")
                .annotate(n=Count("pk"))
                .order_by("-n")
            )
            self.stdout.write("  vectors by model:")
            for row in by_model:
                serving_now = row["search_model"] == current.image_model
                mark = "" if serving_now else "  (stale: not current)"
                self.stdout.write(f"    {row['n']:>8}  {row['search_model']}{mark}")
            failed = manager.filter(
                status_q(model, IndexStatus.FAILED)
                | status_q(model, IndexStatus.GIVEN_UP)
            ).order_by("pk")[: options["failures"]]
            for obj in failed:
                self.stdout.write(
                    self.style.WARNING(
                        f"  failed pk={obj.pk} ({obj.search_attempts} attempt(s), "
                        f"{IndexStatus(obj.search_status).label}): {obj.search_error}"
                    )
                )
