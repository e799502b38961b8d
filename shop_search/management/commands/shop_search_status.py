from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from shop_search.conf import shop_search_settings
from shop_search.encoders import image_model_id
from shop_search.models import ImageVector, IndexStatus, SearchDocument
from shop_search.status import status_filter, with_state
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
        if options["failures"] < 0:
            raise CommandError("--failures must be 0 or more.")
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
        elif current.text_model != shop_search_settings.TEXT_MODEL:
            self.stdout.write(
                self.style.WARNING(
                    f"TEXT_MODEL names {shop_search_settings.TEXT_MODEL}: run "
                    f"shop_search_reindex to switch the words' vectors to it."
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
            state = with_state(manager.all())
            for status in IndexStatus:
                count = state.filter(status_filter(status)).count()
                self.stdout.write(f"  {status.label:<22}{count:>8}")
            content_type = ContentType.objects.get_for_model(
                model, for_concrete_model=False
            )
            words = SearchDocument.objects.filter(content_type=content_type)
            with_vector = words.filter(text_model=current.text_model).count()
            self.stdout.write(f"  {'with words':<22}{words.count():>8}")
            self.stdout.write(f"  {'with text vectors':<22}{with_vector:>8}")
            by_model = (
                ImageVector.objects.filter(content_type=content_type)
                .values("image_model")
                .annotate(
                    products=Count("object_pk", distinct=True), images=Count("pk")
                )
                .order_by("-products")
            )
            self.stdout.write("  vectors by model (products / images):")
            for row in by_model:
                serving_now = row["image_model"] == current.image_model
                mark = "" if serving_now else "  (not serving)"
                self.stdout.write(
                    f"    {row['products']:>8} / {row['images']:<8}"
                    f"{row['image_model']}{mark}"
                )
            failed = state.filter(
                status_filter(IndexStatus.FAILED) | status_filter(IndexStatus.GIVEN_UP)
            ).order_by("pk")[: options["failures"]]
            for obj in failed:
                given_up = obj._ss_attempts >= shop_search_settings.MAX_ATTEMPTS
                status = IndexStatus.GIVEN_UP if given_up else IndexStatus.FAILED
                self.stdout.write(
                    self.style.WARNING(
                        f"  failed pk={obj.pk} ({obj._ss_attempts} attempt(s), "
                        f"{status.label}): {obj._ss_error}"
                    )
                )
