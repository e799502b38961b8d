"""
Request parameters -> Django filters, for the API and the storefront page.

``SHOP_SEARCH['FILTERS']`` maps a query parameter to an ORM lookup on the
product model (``{"min_price": "price__gte", "in_stock": "in_stock"}``); the
``category`` parameter maps to ``search_category_field`` unless configured.
Values are cleaned by the model field's form field, so a bad value is a
clear error, never a database error.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models

from .conf import shop_search_settings
from .search import QueryError

__all__ = ["filter_lookups", "apply_filters", "FilterError"]


class FilterError(QueryError):
    """One or more filter parameters are invalid; ``errors`` maps name -> messages."""

    code = "invalid_filter"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        names = ", ".join(sorted(errors))
        super().__init__(f"Invalid filter parameter(s): {names}.")
        self.errors = errors


def filter_lookups(model: type[models.Model]) -> dict[str, str]:
    lookups = dict(shop_search_settings.FILTERS)
    category = getattr(model, "search_category_field", None)
    if category:
        lookups.setdefault("category", category)
    return lookups


def _target_field(model: type[models.Model], lookup: str) -> models.Field:
    current, field = model, None
    for part in lookup.split("__"):
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            break  # a lookup such as "gte"
        if field.is_relation and field.related_model is not None:
            current = field.related_model
    if field is None:
        raise FieldDoesNotExist(f"{lookup!r} does not start with a field of {model}")
    return field


def apply_filters(
    queryset: models.QuerySet, params: Any
) -> tuple[models.QuerySet, dict]:
    """Filter ``queryset`` by the configured parameters present in ``params``."""
    applied: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, lookup in filter_lookups(queryset.model).items():
        raw = params.get(name)
        if raw in (None, ""):
            continue
        field = _target_field(queryset.model, lookup)
        form_field = field.formfield()
        try:
            value = form_field.clean(raw) if form_field is not None else raw
        except ValidationError as exc:
            errors[name] = list(exc.messages)
            continue
        applied[name] = value
        queryset = queryset.filter(**{lookup: value})
    if errors:
        raise FilterError(errors)
    return queryset, applied
