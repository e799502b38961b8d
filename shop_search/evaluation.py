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
real queries (:func:`read_queries`); both live in
:mod:`shop_search.evaluation_queries` and are importable from here.
Channels are those of :mod:`shop_search.lexical` plus ``image``; ``fused``
is what shoppers get (:func:`shop_search.search.search_text`).

Nothing is written: :func:`evaluate` runs in a transaction that it rolls back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models.functions import Cast

from . import lexical
from .evaluation_queries import (
    QueriesFileError,
    Query,
    catalog_queries,
    one_typo,
    read_queries,
    sample_products,
)
from .lexical import TEXT_CHANNELS
from .models import ImageVector, SearchDocument
from .ranking import rank_nearest
from .search import search_text
from .switching import serving
from .vectors import text_vector

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
