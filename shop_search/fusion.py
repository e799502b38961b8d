"""
Reciprocal rank fusion of the text search's channels, and what a response
says about the matching products (their count, their categories).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from . import lexical
from .conf import shop_search_settings

__all__ = ["fuse", "by_family", "count", "facets", "pks"]


def fuse(
    channels: lexical.Channels, floors: tuple[float, float]
) -> dict[str, tuple[float, list[str]]]:
    """``{key: (fused score, matched channels)}``; image and meaning hits
    count as matched only above their noise floors."""
    weights = shop_search_settings.CHANNEL_WEIGHTS
    k = float(shop_search_settings.RRF_K)
    image_floor, meaning_floor = floors
    fused: dict[str, tuple[float, list[str]]] = {}
    for channel, hits in channels.hits.items():
        weight = float(weights.get(channel, 1.0))
        floor = {"image": image_floor, "meaning": meaning_floor}.get(channel)
        for position, (key, score) in enumerate(hits, start=1):
            total, matched = fused.get(key, (0.0, []))
            if floor is None or score > floor:
                matched = [*matched, channel]
            fused[key] = (total + weight / (k + position), matched)
    return fused


def by_family(
    model: type[models.Model], fused: dict[str, tuple[float, list[str]]]
) -> dict[str, tuple[float, list[str]]]:
    """One entry per family (a product and its variants, when the model
    declares ``parent``): its best-scoring member, with every channel that
    found any member."""
    from .registry import declaration

    decl = declaration(model)
    if not decl.parent or not decl.group_variants or not fused:
        return fused
    parent = model._meta.get_field(decl.parent).attname
    families = {
        str(pk): str(parent_pk if parent_pk is not None else pk)
        for pk, parent_pk in model._base_manager.filter(
            pk__in=pks(model, list(fused))
        ).values_list("pk", parent)
    }
    members: dict[str, list[str]] = {}
    for key in sorted(fused, key=lambda k: -fused[k][0]):
        members.setdefault(families.get(key, key), []).append(key)
    result: dict[str, tuple[float, list[str]]] = {}
    for keys in members.values():
        matched = list(dict.fromkeys(c for k in keys for c in fused[k][1]))
        result[keys[0]] = (fused[keys[0]][0], matched)
    return result


def count(channels: lexical.Channels, matching: list[str], depth: int) -> dict:
    """``count`` (matching products, at most ``COUNT_CAP``) and
    ``count_exact`` (False when there may be more)."""
    cap = int(shop_search_settings.COUNT_CAP)
    total = max(len(matching), channels.word_matches)
    exact = channels.word_matches <= cap and len(matching) < depth
    return {"count": min(total, cap), "count_exact": exact and total <= cap}


def facets(queryset: models.QuerySet, matching: list[str]) -> list[dict[str, Any]]:
    """Matching products per category, most first."""
    from .categories import category_model, display_name
    from .registry import declaration

    field = declaration(queryset.model).categories
    if not field or not matching:
        return []
    counts = (
        queryset.filter(pk__in=pks(queryset.model, matching))
        .values(field)
        .annotate(n=models.Count("pk", distinct=True))
        .order_by("-n")
    )
    counts = [(row[field], row["n"]) for row in counts if row[field] is not None]
    names = category_model(queryset.model)._default_manager.in_bulk(
        [pk for pk, _n in counts]
    )
    return [
        {"id": pk, "name": display_name(names[pk]), "count": n}
        for pk, n in counts
        if pk in names
    ]


def pks(model: type[models.Model], keys: list[str]) -> list[Any]:
    """Document keys (text) as ``model``'s primary keys."""
    to_python = model._meta.pk.to_python
    return [to_python(key) for key in keys]
