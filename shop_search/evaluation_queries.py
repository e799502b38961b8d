"""
Where the relevance report's queries come from (:mod:`shop_search.evaluation`
scores them): the catalog itself (each sampled product's names per
language, a one-typo variant of its name, its identifiers) and a shop's CSV
of real queries with the products each should find.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import models

from .documents import fold, name_fields
from .vectors import QueryError, normalize_query

__all__ = [
    "Query",
    "QueriesFileError",
    "sample_products",
    "catalog_queries",
    "one_typo",
    "read_queries",
]


class QueriesFileError(ValueError):
    """A queries CSV that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Query:
    """A query and the keys (``str(pk)``) of the products it should find."""

    text: str
    expected: frozenset[str]
    kind: str
    language: str | None = None


def sample_products(queryset: models.QuerySet, n: int) -> list[Any]:
    """``n`` products of ``queryset`` evenly spaced by pk (all if fewer)."""
    pks = list(queryset.order_by("pk").values_list("pk", flat=True))
    if n < len(pks):
        pks = [pks[i * len(pks) // n] for i in range(n)]
    rows = queryset.in_bulk(pks)
    return [rows[pk] for pk in pks if pk in rows]


def one_typo(text: str, rng: random.Random) -> str | None:
    """``text`` with one letter of its longest word swapped, dropped or
    changed (never the first or last letter); None when no word has three
    letters."""
    words = text.split()
    if not words:
        return None
    index = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[index]
    if len(word) < 3:
        return None
    at = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["swap", "drop", "change"])
    if kind == "swap" and word[at - 1] != word[at]:
        word = word[: at - 1] + word[at] + word[at - 1] + word[at + 1 :]
    elif kind in ("swap", "drop"):  # swapping two equal letters changes nothing
        word = word[:at] + word[at + 1 :]
    else:
        word = word[:at] + ("x" if word[at].lower() != "x" else "q") + word[at + 1 :]
    words[index] = word
    return " ".join(words)


def catalog_queries(
    products: Iterable[Any], *, language: str, seed: int = 0
) -> list[Query]:
    """
    Queries made from the products themselves: each of their names (a plain
    name field in ``language``, a dict of translations per language), a
    one-typo variant of the first plain name (seeded per product, so a
    product's typo does not depend on the sample), and each identifier.
    Texts that are no valid query (longer than ``MAX_QUERY_LENGTH``) are
    left out.
    """
    queries: list[Query] = []
    for product in products:
        key = frozenset([str(product.pk)])
        model = type(product)
        names: dict[tuple[str, str], None] = {}
        for name_field in name_fields(model):
            value = _attribute(product, name_field)
            if isinstance(value, dict):
                for code, text in value.items():
                    if isinstance(text, str) and text.strip():
                        names[(str(code), text)] = None
            elif isinstance(value, str) and value.strip():
                names[(language, value)] = None
        for code, text in names:
            if valid := _valid(text):
                queries.append(Query(valid, key, "name", code))
        plain = next((text for code, text in names if code == language), None)
        typo = one_typo(plain, random.Random(f"{seed}:{product.pk}")) if plain else None
        if typo and fold(typo) != fold(plain) and (valid := _valid(typo)):
            queries.append(Query(valid, key, "typo", language))
        for identifier_field in getattr(model, "search_identifier_fields", []):
            value = _attribute(product, identifier_field)
            if isinstance(value, str) and (valid := _valid(value)):
                queries.append(Query(valid, key, "identifier"))
    return queries


def _valid(text: str) -> str | None:
    """``text`` as the read door normalises it; None if it is no valid query
    (too long, say)."""
    try:
        return normalize_query(text)
    except QueryError:
        return None


def _attribute(obj: Any, path: str) -> Any:
    for part in path.split("__"):
        obj = getattr(obj, part, None)
    return obj


def read_queries(path: str | Path, queryset: models.QuerySet) -> list[Query]:
    """
    A shop's own queries from a CSV file with the columns ``query`` and
    ``expected`` (product identifiers such as SKUs, or pks, separated by
    ``|``) and optionally ``language``. Expected products must be among
    ``queryset`` (the visible products). Raises :class:`QueriesFileError`.
    """
    fix = "a UTF-8 CSV file with the columns query,expected (and optionally language)"
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip().lower() for name in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QueriesFileError(f"Cannot read {path} ({exc}); pass {fix}.") from exc
    missing = [name for name in ("query", "expected") if name not in header]
    if missing:
        raise QueriesFileError(
            f"{path} has no {' or '.join(missing)} column (header: "
            f"{','.join(header) or 'none'}); pass {fix}."
        )
    queries, unknown = [], []
    for line, row in rows:
        try:
            text = normalize_query(row.get("query") or "")
        except QueryError as exc:
            raise QueriesFileError(
                f"{path} line {line}: {exc.message} Fix or remove that row."
            ) from exc
        values = [v.strip() for v in (row.get("expected") or "").split("|")]
        values = [v for v in values if v]
        if not values:
            raise QueriesFileError(
                f"{path} line {line}: no expected product; list the product "
                f"identifiers or pks that {text!r} should find, separated by |."
            )
        expected = set()
        for value in values:
            key = _resolve(queryset, value)
            if key is None:
                unknown.append(f"line {line}: {value!r}")
            else:
                expected.add(key)
        language = (row.get("language") or "").strip() or None
        queries.append(Query(text, frozenset(expected), "csv", language))
    if unknown:
        shown = "; ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise QueriesFileError(
            f"{path}: {len(unknown)} expected product(s) are not visible "
            f"products ({shown}). Use identifiers ("
            f"{', '.join(getattr(queryset.model, 'search_identifier_fields', []))}"
            f") or pks of {queryset.model._meta.label} that shoppers can see."
        )
    return queries


def _resolve(queryset: models.QuerySet, value: str) -> str | None:
    """The key of the product with identifier (first) or pk ``value``."""
    for name in getattr(queryset.model, "search_identifier_fields", []):
        pk = (
            queryset.filter(**{f"{name}__iexact": value})
            .values_list("pk", flat=True)
            .first()
        )
        if pk is not None:
            return str(pk)
    try:
        pk = queryset.model._meta.pk.to_python(value)
    except Exception:  # a value that cannot be this model's pk
        return None
    return str(pk) if queryset.filter(pk=pk).exists() else None
