"""
Reciprocal rank fusion of the text search's channels, and what a response
says about the matching products (their count, their categories).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from . import lexical
from .conf import shop_search_settings

__all__ = ["depth_for", "fuse", "by_family", "count", "facets", "pks"]


def depth_for(wanted: int) -> int:
    """
    How deep each channel is ranked for a page ending at ``wanted``:
    ``CHANNEL_DEPTH`` doubled until it covers the page (at most
    ``COUNT_CAP``). Depths come in these few tiers so that every page of a
    search is cut from the same ranking (see :func:`fuse`).
    """
    base = max(1, int(shop_search_settings.CHANNEL_DEPTH))
    cap = max(base, int(shop_search_settings.COUNT_CAP))
    depth = base
    while depth < wanted and depth < cap:
        depth *= 2
    return min(depth, cap)


def _tier(rank: int, base: int) -> int:
    """0 for ranks within ``base``, then 1, 2... per doubling of the depth."""
    tier = 0
    while rank > base << tier:
        tier += 1
    return tier


def fuse(
    channels: lexical.Channels, floors: tuple[float, float]
) -> dict[str, tuple[float, list[str]]]:
    """
    ``{key: (fused score, matched channels)}``, best first; image and
    meaning hits count as matched only above their noise floors.

    Reciprocal rank fusion over lists cut at one depth would rank a product
    differently at another depth (a rank past the first cut adds to its
    score), so pages fetched at different depths would repeat and skip
    products. So a product's place is fixed by the shallowest depth tier
    (:func:`depth_for`) at which any channel has it, and its score counts
    only the ranks within that tier: the same at every depth that reaches it.
    """
    weights = shop_search_settings.CHANNEL_WEIGHTS
    k = float(shop_search_settings.RRF_K)
    base = max(1, int(shop_search_settings.CHANNEL_DEPTH))
    image_floor, meaning_floor = floors
    # Per product: its best position, (weight, position) per channel, and
    # the channels whose hit beats the noise floor. Runs on every search:
    # one pass over the hits, no per-product generators.
    ranks: dict[str, tuple[list[int], list[tuple[float, int]], list[str]]] = {}
    for channel, hits in channels.hits.items():
        floor = {"image": image_floor, "meaning": meaning_floor}.get(channel)
        weight = float(weights.get(channel, 1.0))
        for position, (key, score) in enumerate(hits, start=1):
            entry = ranks.get(key)
            if entry is None:
                entry = ranks[key] = ([position], [], [])
            elif position < entry[0][0]:
                entry[0][0] = position
            entry[1].append((weight, position))
            if floor is None or score > floor:
                entry[2].append(channel)
    scored = []
    for key, ([best], found, matched) in ranks.items():
        tier = _tier(best, base)
        reach = base << tier
        # sum() as before: from Python 3.12 it adds with compensation, and a
        # plain loop would break ties differently there.
        total = sum(
            weight / (k + position) for weight, position in found if position <= reach
        )
        scored.append((tier, -total, key, matched))
    scored.sort()
    return {key: (-negative, matched) for _t, negative, key, matched in scored}


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
    for key in fused:  # best first
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
