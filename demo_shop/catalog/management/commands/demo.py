from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

TEST_MODELS_DIR = Path(settings.BASE_DIR) / ".models"


class Command(BaseCommand):
    help = (
        "Set up and run the demo shop: migrate, load the generated catalog once, "
        "index it (with progress), then serve the site like runserver."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default="127.0.0.1:8000",
            help="Port or address:port to serve on, as for runserver.",
        )
        parser.add_argument(
            "--test-models",
            action="store_true",
            help="Use tiny random-weight models built locally (no downloads). "
            "Everything works, but rankings are meaningless.",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set up and index, then exit without serving.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["test_models"]:
            self._use_test_models()
        streams = {"stdout": self.stdout._out, "stderr": self.stderr._out}
        call_command("migrate", interactive=False, verbosity=1, **streams)
        # The database cache, when settings fell back to it (no Redis).
        call_command("createcachetable", **streams)
        self._load_catalog()
        call_command(
            "shop_search_reindex", verbosity=options["verbosity"] or 1, **streams
        )
        if options["test_models"]:
            self.stdout.write(
                self.style.WARNING(
                    "Running with tiny random-weight TEST models: search works end "
                    "to end, but rankings are meaningless. Without --test-models "
                    "the demo uses clip-ViT-B-32 (downloaded once, ~600 MB)."
                )
            )
        if not options["no_serve"]:
            from shop_search.switching import warm_up

            warm_up()  # the first search should not wait for model loading
            self.stdout.write(
                "Storefront search: /search/   API: /api/search/?q=...   "
                "schema: /api/schema/   admin: /admin/"
            )
            call_command("runserver", options["addrport"], use_reloader=False)

    def _use_test_models(self) -> None:
        from shop_search.conf import shop_search_settings
        from shop_search.encoders import clear_encoders
        from shop_search.testing import build_test_models

        self.stdout.write(f"Building tiny test models in {TEST_MODELS_DIR} ...")
        paths = build_test_models(TEST_MODELS_DIR)
        # Environment too, so that child processes (runserver) agree.
        os.environ["SHOP_SEARCH_IMAGE_MODEL"] = paths.image
        os.environ["SHOP_SEARCH_TEXT_MODEL"] = paths.text
        settings.SHOP_SEARCH = {
            **settings.SHOP_SEARCH,
            "IMAGE_MODEL": paths.image,
            "TEXT_MODEL": paths.text,
        }
        shop_search_settings.reload()
        clear_encoders()

    def _load_catalog(self) -> None:
        from demo_shop.catalog.demo_data import generate_catalog
        from demo_shop.catalog.loading import load_items
        from demo_shop.catalog.models import Product

        if Product.objects.exists():
            self.stdout.write(
                f"Catalog already loaded ({Product.objects.count()} products)."
            )
            return
        from tqdm import tqdm

        counts = {"photos": 0, "hidden": 0}

        def counted(items):
            for item in items:
                counts["photos"] += len(item["gallery"])
                counts["hidden"] += not item["published"]
                yield item

        with tqdm(
            total=240,
            desc="Drawing demo catalog",
            unit="product",
            file=self.stdout,
            mininterval=0.5,
        ) as bar:
            created, _ = load_items(counted(generate_catalog()), progress=bar.update)
        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {created} demo products with {counts['photos']} gallery "
                f"photos; {counts['hidden']} are unpublished (hidden from shoppers)."
            )
        )
