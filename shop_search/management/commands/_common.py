"""Helpers shared by the shop_search management commands."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import CommandError

from shop_search.registry import searchable_models


def selected_models(labels: list[str] | None) -> list[type[Any]]:
    """The searchable models named by ``--model app_label.Model`` (all if none)."""
    available = searchable_models()
    if not available:
        raise CommandError(
            "No searchable models: call shop_search.register('app_label.Model', "
            "images=[...], ...) from an AppConfig.ready(), or inherit "
            "shop_search.models.SearchableProduct."
        )
    if not labels:
        return available
    chosen = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as exc:
            raise CommandError(
                f"Unknown model {label!r}: use app_label.Model."
            ) from exc
        if model not in available:
            names = ", ".join(m._meta.label for m in available)
            raise CommandError(f"{label} is not searchable. Searchable: {names}.")
        chosen.append(model)
    return chosen


def progress_bar(
    total: int, label: str, stdout: Any, verbosity: int, unit: str = "product"
) -> Any:
    """A tqdm bar on the command's output, or None at verbosity 0."""
    if not verbosity:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit=unit,
        file=stdout,
        dynamic_ncols=True,
        mininterval=0.5,
    )
