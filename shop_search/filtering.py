"""
Request parameters -> Django filters, for the API and the storefront page.

``SHOP_SEARCH['FILTERS']`` maps a query parameter to an ORM lookup on the
product model (``{"min_price": "price__gte", "in_stock": "in_stock"}``); the
``category`` parameter maps to the declared categories unless configured.
Each parameter is typed from the model field it ends on (integer, number,
boolean, string; a relation takes its target's primary key), validated with
bounds the database accepts, and described in the OpenAPI schema the same
way. A malformed value is a 400; a well-formed value that matches nothing
(an unknown category id) gives an empty result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.db import models

from .conf import shop_search_settings
from .vectors import QueryError

__all__ = ["FilterParam", "filter_params", "apply_filters", "FilterError"]

# Bounds that keep a value inside what PostgreSQL compares without an error.
INT_BOUND = 2**63 - 1
NUMBER_BOUND = 10**15


class FilterError(QueryError):
    """One or more filter parameters are invalid; ``errors`` maps name -> messages."""

    code = "invalid_filter"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        names = ", ".join(sorted(errors))
        super().__init__(f"Invalid filter parameter(s): {names}.")
        self.errors = errors


@dataclass
class FilterParam:
    """One filter parameter: its lookup, form field and OpenAPI schema."""

    name: str
    lookup: str
    form_field: forms.Field
    schema: dict[str, Any]


def _target_field(model: type[models.Model], lookup: str) -> models.Field:
    current, field = model, None
    for part in lookup.split("__"):
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            break  # a lookup such as "gte" or "iexact"
        if field.is_relation and field.related_model is not None:
            current = field.related_model
            field = current._meta.pk
    if field is None:
        raise FieldDoesNotExist(f"{lookup!r} does not start with a field of {model}")
    return field


def _multi_valued(model: type[models.Model], lookup: str) -> bool:
    """Whether ``lookup`` follows a relation with many rows per product."""
    current = model
    for part in lookup.split("__"):
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if field.many_to_many or field.one_to_many:
            return True
        if not field.is_relation or field.related_model is None:
            return False
        current = field.related_model
    return False


class StrictBooleanField(forms.Field):
    """``true``/``false`` (or ``1``/``0``), nothing else."""

    values = {"true": True, "1": True, "false": False, "0": False}

    def to_python(self, value: Any) -> bool:
        try:
            return self.values[str(value).strip().lower()]
        except KeyError:
            raise ValidationError("Use true or false.", code="invalid") from None


def _param(name: str, lookup: str, field: models.Field) -> FilterParam:
    description = f"Filter on `{lookup}`."
    if isinstance(field, models.BooleanField):
        return FilterParam(
            name,
            lookup,
            StrictBooleanField(),
            {"type": "boolean", "description": description},
        )
    if isinstance(field, (models.IntegerField, models.AutoField)):
        bounds = {"minimum": -INT_BOUND, "maximum": INT_BOUND}
        return FilterParam(
            name,
            lookup,
            forms.IntegerField(min_value=-INT_BOUND, max_value=INT_BOUND),
            {"type": "integer", **bounds, "description": description},
        )
    if isinstance(field, (models.DecimalField, models.FloatField)):
        bounds = {"minimum": -NUMBER_BOUND, "maximum": NUMBER_BOUND}
        return FilterParam(
            name,
            lookup,
            forms.DecimalField(min_value=-NUMBER_BOUND, max_value=NUMBER_BOUND),
            {"type": "number", **bounds, "description": description},
        )
    max_length = getattr(field, "max_length", None) or 200
    return FilterParam(
        name,
        lookup,
        forms.CharField(max_length=max_length, strip=False, required=False),
        {
            "type": "string",
            "maxLength": max_length,
            "pattern": "^[^\\u0000]*$",
            "description": description,
        },
    )


def filter_params(model: type[models.Model]) -> list[FilterParam]:
    """The filter parameters of ``model``, from ``FILTERS`` and the category field."""
    lookups = dict(shop_search_settings.FILTERS)
    from .registry import declaration

    category = declaration(model).categories
    if category:
        lookups.setdefault("category", category)
    return [
        _param(name, lookup, _target_field(model, lookup))
        for name, lookup in lookups.items()
    ]


def apply_filters(
    queryset: models.QuerySet, params: Any
) -> tuple[models.QuerySet, dict[str, Any]]:
    """Filter ``queryset`` by the configured parameters present in ``params``."""
    applied: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    from .registry import declaration

    category_lookup = declaration(queryset.model).categories
    for param in filter_params(queryset.model):
        raw = params.get(param.name)
        if raw is None:
            continue
        try:
            ProhibitNullCharactersValidator()(raw)
            value = param.form_field.clean(raw)
        except ValidationError as exc:
            errors[param.name] = list(exc.messages)
            continue
        applied[param.name] = value
        if param.name == "category" and param.lookup == category_lookup:
            # A category finds the products of the categories below it too.
            from .categories import in_category

            queryset = in_category(queryset, value)
        elif _multi_valued(queryset.model, param.lookup):
            # A join to many rows (many-to-many, a reverse foreign key such
            # as stock records) would repeat a product once per matching
            # row; a subquery keeps one row per product.
            matching = queryset.model._base_manager.filter(**{param.lookup: value})
            queryset = queryset.filter(pk__in=matching.values("pk"))
        else:
            queryset = queryset.filter(**{param.lookup: value})
    if errors:
        raise FilterError(errors)
    return queryset, applied
