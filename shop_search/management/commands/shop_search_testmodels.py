from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Build tiny random-weight CLIP and multilingual text models into DIR, "
        "offline, for tests and for demos without model downloads. Their "
        "rankings are meaningless."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", help="Folder to build the models in.")

    def handle(self, *args: Any, directory: str, **options: Any) -> None:
        from shop_search.testing import build_test_models

        paths = build_test_models(directory)
        self.stdout.write(self.style.SUCCESS("Built tiny test models:"))
        self.stdout.write(
            "SHOP_SEARCH = {\n"
            f"    'IMAGE_MODEL': {paths.image!r},\n"
            f"    'TEXT_MODEL': {paths.text!r},\n"
            "}"
        )
