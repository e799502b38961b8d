"""
Shop the look: the items detected in an outfit or room photo, each with the
products that match it, and the whole photo's matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import models

from .ranking import Page, nearest
from .registry import declaration
from .switching import serving
from .vectors import as_picture, encoder_gate

__all__ = ["Look", "LookItem", "shop_the_look"]


@dataclass
class LookItem:
    """An item found in the photo, with the products that match it."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the uploaded image's pixels
    category: Any
    score: float
    page: Page


@dataclass
class Look:
    """Shop-the-look results: per detected item, and for the whole image."""

    items: list[LookItem]
    whole_image: Page
    image_size: tuple[int, int]


def shop_the_look(
    queryset: models.QuerySet, image: Any, *, limit: int | None = None
) -> Look:
    """
    Detect the items in an outfit or room photo and find products for each.

    Each item's products are searched within the item's category when the
    model declares categories (falling back to all products if that
    category has none), and always for the whole image too.
    """
    from .categories import all_categories, in_category

    picture = as_picture(image)
    model = queryset.model
    by_category = bool(declaration(model).categories)
    categories = all_categories(model) if by_category else []
    current = serving(queryset.db)
    with encoder_gate:
        detections, vectors = _detect_and_encode(picture, categories, current)
    width, height = picture.info.get("original_size", picture.size)
    sx, sy = width / picture.width, height / picture.height
    items = []
    for detection, vector in zip(detections, vectors[1:], strict=True):
        page = Page(hits=[], limit=1, offset=0, has_more=False)
        if by_category:
            page = nearest(
                in_category(queryset, detection.category),
                vector,
                limit=limit,
                image_model=current.image_model,
            )
        if not page.hits:
            page = nearest(
                queryset, vector, limit=limit, image_model=current.image_model
            )
        x0, y0, x1, y1 = detection.box
        box = (
            max(0, round(x0 * sx)),
            max(0, round(y0 * sy)),
            min(width, round(x1 * sx)),
            min(height, round(y1 * sy)),
        )
        items.append(LookItem(box, detection.category, detection.score, page))
    return Look(
        items=items,
        whole_image=nearest(
            queryset, vectors[0], limit=limit, image_model=current.image_model
        ),
        image_size=(width, height),
    )


def _detect_and_encode(
    picture: Any, categories: list[Any], current: Any
) -> tuple[list, np.ndarray]:
    """Detected items (boxes too small to crop are dropped) and the vectors of
    the whole picture followed by each item's crop."""
    from .detectors import get_detector

    # Boxes of a few pixels are not items, and would make empty crops.
    minimum = max(4.0, 0.02 * min(picture.size))
    detections = [
        d
        for d in get_detector().detect(picture, categories, current)
        if d.box[2] - d.box[0] >= minimum and d.box[3] - d.box[1] >= minimum
    ]
    crops = [picture.crop(tuple(round(v) for v in d.box)) for d in detections]
    return detections, current.image_encoder.encode_images([picture, *crops])
