"""Load catalog items (from the demo generator or an import file) into the database."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils.text import slugify

from shop_search.signal_handlers import indexing_paused

from .models import Category, Product, ProductImage


def load_items(
    items: Iterable[dict[str, Any]], *, progress: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """
    Create or update products from ``{"category": {...}, "product": {...},
    "image": bytes | None, "image_name": str, "gallery": [bytes, ...],
    "published": bool}`` dicts, matched on ``sku``. ``gallery`` (more photos,
    in display order) replaces the product's gallery where it differs;
    ``published`` sets ``is_published``. Either may be left out to keep what
    the product has.

    Indexing is paused while loading; run ``shop_search_reindex`` afterwards
    to encode the new images in batches. Returns (created, updated).
    """
    created = updated = 0
    categories: dict[str, Category] = {}
    with indexing_paused(), transaction.atomic():
        for item in items:
            cat = item["category"]
            category = categories.get(cat["name"])
            if category is None:
                category, _ = Category.objects.get_or_create(
                    name=cat["name"],
                    defaults={
                        "slug": cat.get("slug") or slugify(cat["name"]),
                        "translations": cat.get("translations", {}),
                    },
                )
                categories[cat["name"]] = category
            fields = dict(item["product"])
            fields["price"] = Decimal(str(fields["price"]))
            product = Product.objects.filter(sku=fields["sku"]).first()
            if product is None:
                product = Product(category=category, **fields)
                created += 1
            else:
                for name, value in fields.items():
                    setattr(product, name, value)
                product.category = category
                updated += 1
            if item.get("image"):
                name = item.get("image_name") or f"{slugify(fields['sku'])}.png"
                product.image.save(name, ContentFile(item["image"]), save=False)
            if "published" in item:
                product.is_published = item["published"]
            product.save()
            if item.get("gallery") is not None:
                _save_gallery(product, item["gallery"])
            if progress is not None:
                progress(1)
    return created, updated


def _save_gallery(product: Product, photos: list[bytes]) -> None:
    """Make ``product``'s gallery ``photos``, at positions 0..n-1, rewriting
    only the photos that changed (so a reload re-encodes nothing)."""
    rows = list(product.gallery.all())
    for position, data in enumerate(photos):
        row = rows[position] if position < len(rows) else None
        if row is not None and row.position == position and _same(row, data):
            continue
        if row is None:
            row = ProductImage(product=product)
        row.position = position
        name = f"{slugify(product.sku)}-{position + 1}.png"
        row.image.save(name, ContentFile(data), save=False)
        row.save()
    for row in rows[len(photos) :]:
        row.delete()


def _same(row: ProductImage, data: bytes) -> bool:
    try:
        with row.image.open("rb") as fh:
            return fh.read() == data
    except OSError:  # the file is gone: write it again
        return False
