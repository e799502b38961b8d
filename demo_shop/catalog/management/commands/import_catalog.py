from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

REQUIRED = ("sku", "name", "price", "category")


class Command(BaseCommand):
    help = (
        "Load a catalog from CSV or JSON Lines (.csv, .jsonl). Columns/keys: sku, "
        "name, price, category (required); description, currency, colour, "
        "in_stock, image (a local file path, relative to the file's folder), "
        "name_<lang> and category_<lang> for translations. Products are matched "
        "on sku, then indexed in batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--no-index",
            action="store_true",
            help="Only load; run shop_search_reindex later.",
        )

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        from demo_shop.catalog.loading import load_items

        if not file.is_file():
            raise CommandError(f"{file} does not exist.")
        rows = list(self._read(file))
        items = [self._item(row, number, file.parent) for number, row in rows]
        created, updated = load_items(items)
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {created} new and {updated} updated products."
            )
        )
        if not options["no_index"]:
            call_command(
                "shop_search_reindex",
                verbosity=options["verbosity"],
                stdout=self.stdout._out,
                stderr=self.stderr._out,
            )

    def _read(self, file: Path) -> Any:
        suffix = file.suffix.lower()
        if suffix == ".csv":
            with file.open(newline="", encoding="utf-8-sig") as fh:
                for number, row in enumerate(csv.DictReader(fh), start=2):
                    yield number, row
        elif suffix in (".jsonl", ".ndjson"):
            with file.open(encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CommandError(
                            f"{file}:{number}: invalid JSON: {exc}"
                        ) from exc
        else:
            raise CommandError(f"{file}: use a .csv or .jsonl file.")

    def _item(self, row: dict[str, Any], number: int, base: Path) -> dict[str, Any]:
        missing = [key for key in REQUIRED if not str(row.get(key) or "").strip()]
        if missing:
            raise CommandError(f"line {number}: missing {', '.join(missing)}.")
        names = dict(row.get("name_translations") or {})
        category_names = {}
        for key, value in row.items():
            if key.startswith("name_") and key != "name_translations" and value:
                names[key[5:]] = value
            if key.startswith("category_") and value:
                category_names[key[9:]] = value
        image = None
        image_name = None
        if row.get("image"):
            path = Path(row["image"])
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise CommandError(f"line {number}: image {path} does not exist.")
            image, image_name = path.read_bytes(), path.name
        in_stock = str(row.get("in_stock", "true")).strip().lower()
        return {
            "category": {"name": row["category"], "translations": category_names},
            "product": {
                "sku": str(row["sku"]),
                "name": row["name"],
                "name_translations": names,
                "description": row.get("description") or "",
                "price": row["price"],
                "currency": row.get("currency") or "EUR",
                "colour": row.get("colour") or "",
                "in_stock": in_stock not in ("0", "false", "no", ""),
            },
            "image": image,
            "image_name": image_name,
        }
