"""
When a hit is a match: the noise floors of the image and meaning channels.

A vector channel always returns neighbours, even for nonsense. What nonsense
scores depends on the models and the catalog, so it is measured at run time:
a dozen fixed random letter strings are ranked like queries, and a real
query's hit must beat what they reach to count as a match (and for the
answer not to be ``no_match``). Cached per process for ``FLOOR_SECONDS``
(ten minutes): a catalog changes slowly, and measuring costs two dozen
queries.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from django.db import models

from . import lexical
from .ranking import rank_nearest
from .vectors import text_vector

__all__ = ["noise_floors", "clear"]

FLOOR_SECONDS = 600.0
_floors: dict[tuple, tuple[float, tuple[float, float]]] = {}
_lock = threading.Lock()


def clear() -> None:
    """Forget the measured floors (the catalog changed)."""
    with _lock:
        _floors.clear()


def _nonsense(count: int = 12) -> list[str]:
    """Fixed random letter strings: queries that mean nothing anywhere."""
    import random

    rng = random.Random(20261127)
    letters = "bcdfghjklmnpqrstvwxz"
    return [
        " ".join("".join(rng.choices(letters, k=rng.randint(4, 7))) for _ in "ab")
        for _ in range(count)
    ]


def noise_floors(
    model: type[models.Model], current: Any, using: str = "default"
) -> tuple[float, float]:
    """
    What nonsense scores on this catalog with the serving models: for a
    dozen random letter strings, the best image and meaning similarity;
    the floor is the highest of them or their mean plus three standard
    deviations, whichever is higher. A real query's hit must beat it to
    count as a match. Measured at run time (cached ten minutes per
    process), so it fits the models and the catalog instead of a constant
    that suits one model.
    """
    key = (model._meta.label, current.image_model, current.text_model, using)
    cached = _floors.get(key)
    if cached and time.monotonic() - cached[0] < FLOOR_SECONDS:
        return cached[1]
    products = model._base_manager.using(using).all()
    image_scores, meaning_scores = [], []
    for probe in _nonsense():
        vector = text_vector(probe, current.text_encoder)
        top = rank_nearest(products, vector, limit=1, image_model=current.image_model)
        image_scores.append(top.hits[0].score if top.hits else -1.0)
        meaning_scores.append(
            lexical.best_meaning(products, vector, text_model=current.text_model)
        )

    def floor(scores: list[float]) -> float:
        values = np.array(scores)
        return float(max(values.max(), values.mean() + 3 * values.std()))

    image_floor, meaning_floor = floor(image_scores), floor(meaning_scores)
    floors = (image_floor, meaning_floor)
    with _lock:
        _floors[key] = (time.monotonic(), floors)
    return floors
