"""
A shop's own relevance report (``manage.py shop_search_evaluate``).

Queries whose right answer is known are run through the read door and its
channels, and each channel's ranking is scored:

- **recall@1** and **recall@k**: the share of a query's expected products in
  the top 1 / top k, out of at most that many (so a perfect ranking scores 1
  even when a query expects several products);
- **MRR**: the mean over queries of 1 / the rank of the first expected
  product in the top k (0 when none is there).

The queries come from the catalog itself (:func:`catalog_queries`): each
sampled product's names (one query per language of its translations), a
one-typo variant of its name, and its identifiers; and from a shop's CSV of
real queries (:func:`read_queries`). Channels are those of
:mod:`shop_search.lexical` plus ``image``; ``fused`` is what shoppers get
(:func:`shop_search.search.search_text`).

Nothing is written: :func:`evaluate` runs in a transaction that it rolls back.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models.functions import Cast

from . import lexical
from .documents import fold, name_fields
from .lexical import TEXT_CHANNELS
from .models import ImageVector, SearchDocument
from .ranking import rank_nearest
from .search import search_text
from .switching import serving
from .vectors import QueryError, normalize_query, text_vector

__all__ = [
    "CHANNELS",
    "KINDS",
    "Query",
    "Score",
    "Report",
    "QueriesFileError",
    "sample_products",
    "catalog_queries",
    "one_typo",
    "read_queries",
    "rolled_back",
    "coverage",
    "evaluate",
    "uses_test_models",
    "format_table",
    "as_json",
]

#: The rankings scored: each channel on its own, then the fusion shoppers see.
CHANNELS = (*TEXT_CHANNELS, "image", "fused")
#: Kinds of query, in report order.
KINDS = ("name", "typo", "identifier", "csv")


class QueriesFileError(ValueError):
    """A queries CSV that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Query:
    """A query and the keys (``str(pk)``) of the products it should find."""

    text: str
    expected: frozenset[str]
    kind: str
    language: str | None = None


@dataclass
class Score:
    """Running sums for one (kind, language, channel) group."""

    queries: int = 0
    answered: int = 0  # queries for which the channel ranked anything
    recall_1: float = 0.0
    recall_k: float = 0.0
    reciprocal: float = 0.0

    def add(self, ranking: list[str], expected: frozenset[str], k: int) -> None:
        top = ranking[:k]
        self.queries += 1
        self.answered += bool(top)
        self.recall_1 += bool(top) and top[0] in expected
        self.recall_k += len(expected & set(top)) / min(len(expected), k)
        rank = next((i for i, key in enumerate(top, 1) if key in expected), None)
        self.reciprocal += 1.0 / rank if rank else 0.0

    def metrics(self) -> dict[str, float]:
        n = self.queries or 1
        return {
            "recall@1": self.recall_1 / n,
            "recall@k": self.recall_k / n,
            "mrr": self.reciprocal / n,
        }


@dataclass
class Report:
    """Scores per ``(kind, language, channel)`` and the queries that missed."""

    k: int
    channels: list[str]
    language: str | None = None  # the shop's own, listed first
    scores: dict[tuple[str, str | None, str], Score] = field(default_factory=dict)
    misses: list[Query] = field(default_factory=list)  # not in the fused top k

    def rows(self) -> list[dict[str, Any]]:
        """One row per group, in report order (kinds, then languages)."""

        def order(key: tuple[str, str | None, str]) -> tuple:
            kind, language, channel = key
            kind_at = KINDS.index(kind) if kind in KINDS else len(KINDS)
            own = language is None or language == self.language
            return kind_at, not own, language or "", self.channels.index(channel)

        rows = []
        for key in sorted(self.scores, key=order):
            kind, language, channel = key
            score = self.scores[key]
            metrics = score.metrics()
            rows.append(
                {
                    "kind": kind,
                    "language": language,
                    "channel": channel,
                    "queries": score.queries,
                    "answered": score.answered,
                    "recall@1": round(metrics["recall@1"], 4),
                    f"recall@{self.k}": round(metrics["recall@k"], 4),
                    "mrr": round(metrics["mrr"], 4),
                }
            )
        return rows


# --- the queries ---------------------------------------------------------------


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


# --- the rankings ----------------------------------------------------------------


def uses_test_models(current: Any) -> bool:
    """Whether the serving models are the random-weight models that
    :func:`shop_search.testing.build_test_models` builds (rankings by image
    or meaning are noise with them)."""
    pattern = re.compile(r"(tiny|full)-(clip|multilingual-text)")
    return any(
        Path(model_id).is_dir() and pattern.fullmatch(Path(model_id).name)
        for model_id in (current.image_model, current.text_model)
    )


@contextmanager
def rolled_back(using: str) -> Iterator[None]:
    """A transaction that is always rolled back: whatever runs inside (the
    serving models recorded on first use, say) leaves no trace."""
    with transaction.atomic(using=using):
        try:
            yield
        finally:
            transaction.set_rollback(True, using=using)


def coverage(queryset: models.QuerySet, current: Any) -> dict[str, int]:
    """How many of the products have indexed words, and a vector of the
    serving image model (a channel cannot find a product it has not seen)."""
    using = queryset.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        queryset.model, for_concrete_model=False
    )
    keys = queryset.annotate(_key=Cast("pk", models.CharField())).values("_key")
    return {
        "products": queryset.count(),
        "with_words": SearchDocument.objects.using(using)
        .filter(content_type=content_type, object_pk__in=keys)
        .count(),
        "with_image_vector": ImageVector.objects.using(using)
        .filter(
            content_type=content_type,
            object_pk__in=keys,
            image_model=current.image_model,
        )
        .values("object_pk")
        .distinct()
        .count(),
    }


def rankings(
    queryset: models.QuerySet,
    query: str,
    *,
    channels: list[str],
    k: int,
    current: Any,
) -> dict[str, list[str]]:
    """The top ``k`` product keys of each of ``channels`` for ``query``."""
    vector = text_vector(query, current.text_encoder)
    result: dict[str, list[str]] = {}
    if set(channels) & set(TEXT_CHANNELS):
        found = lexical.rank(
            queryset, query, vector, text_model=current.text_model, depth=k
        )
        for channel in TEXT_CHANNELS:
            result[channel] = [key for key, _score in found.hits.get(channel, [])]
    if "image" in channels:
        page = rank_nearest(queryset, vector, limit=k, image_model=current.image_model)
        result["image"] = [str(hit.object.pk) for hit in page]
    if "fused" in channels:
        page = search_text(queryset, query, current=current, limit=k)
        result["fused"] = [str(hit.object.pk) for hit in page]
    return {channel: result.get(channel, []) for channel in channels}


def evaluate(
    queryset: models.QuerySet,
    queries: list[Query],
    *,
    k: int = 10,
    channels: list[str] | None = None,
    current: Any = None,
    language: str | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Report:
    """
    Score each channel's top ``k`` for ``queries`` over ``queryset``
    (``language``, the shop's own, is reported first). Runs in
    a transaction that is rolled back, so the evaluation leaves the database
    as it found it (even where the first search records the serving models).
    """
    channels = list(channels or CHANNELS)
    report = Report(k=k, channels=channels, language=language)
    with rolled_back(queryset.db):
        current = current or serving(queryset.db)
        for query in queries:
            ranked = rankings(
                queryset, query.text, channels=channels, k=k, current=current
            )
            for channel, ranking in ranked.items():
                key = (query.kind, query.language, channel)
                report.scores.setdefault(key, Score()).add(ranking, query.expected, k)
            if "fused" in ranked and not query.expected & set(ranked["fused"]):
                report.misses.append(query)
            if progress is not None:
                progress(1)
    return report


# --- output ----------------------------------------------------------------------


def format_table(report: Report) -> str:
    """The report as a text table, a blank line between query groups."""
    k = report.k
    columns = [
        ("kind", "<10"),
        ("language", "<8"),
        ("channel", "<10"),
        ("queries", ">7"),
        ("answered", ">8"),
        ("recall@1", ">8"),
        (f"recall@{k}", f">{max(8, len(str(k)) + 7)}"),
        ("mrr", ">6"),
    ]
    lines = ["  ".join(f"{name.upper():{spec}}" for name, spec in columns)]
    group = None
    for row in report.rows():
        if group is not None and (row["kind"], row["language"]) != group:
            lines.append("")
        group = (row["kind"], row["language"])
        cells = dict(row, language=row["language"] or "-")
        lines.append(
            "  ".join(
                f"{cells[name]:{spec}.3f}"
                if isinstance(cells[name], float)
                else f"{cells[name]:{spec}}"
                for name, spec in columns
            )
        )
    return "\n".join(lines)


def as_json(report: Report, **about: Any) -> dict[str, Any]:
    """The report as plain data, with ``about`` (model, serving models...)."""
    return {
        **about,
        "k": report.k,
        "channels": report.channels,
        "results": report.rows(),
        "fused_misses": [
            {"query": q.text, "kind": q.kind, "language": q.language}
            for q in report.misses
        ]
        if "fused" in report.channels
        else [],
    }
