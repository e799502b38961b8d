"""
The text channels over a product's own words, in one SQL round trip.

Channels (each a ranked list of product keys, best first):

- ``identifier``: the query is one of the product's identifiers (SKU, GTIN).
- ``name``: every query word is in the product's words (PostgreSQL full-text
  search, ``simple`` configuration over accent-folded text, so it works the
  same in every language); ranked by ``ts_rank_cd``, names weighing more.
- ``typo``: the same after correcting words that are not in the catalog's
  vocabulary to the nearest word that is (one edit for short words, two for
  long ones; RapidFuzz over the vocabulary PostgreSQL's ``ts_stat`` lists).
  The embedded PostgreSQL has no ``pg_trgm``; this works on any server.
- ``some_words``: products with all query words but one (either of two),
  when no product has them all.
- ``meaning``: the text model's embedding of the product's names against the
  query's (semantic, across languages).

:mod:`shop_search.search` fuses these with the image channel.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.db import connections, models

from .conf import shop_search_settings
from .documents import fold, tokens
from .estimates import candidate_sql
from .ranking import hnsw_cursor, vector_literal

__all__ = [
    "Channels",
    "TEXT_CHANNELS",
    "rank",
    "query_words",
    "vocabulary",
    "clear_vocabularies",
    "correct",
    "suggest_titles",
    "best_meaning",
]

#: Matches ranked per channel, as a multiple of the channel's depth.
RANK_POOL = 4

#: The text channels, in the order their hits are read.
TEXT_CHANNELS = ("identifier", "name", "typo", "some_words", "meaning")


@dataclass
class Channels:
    """Per channel, ``[(object_pk, score)]`` best first, and the words used."""

    hits: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)
    corrected: dict[str, str] = field(default_factory=dict)
    word_matches: int = 0  # products with every (corrected) word, up to the cap


# --- the vocabulary, for typo correction ---------------------------------------


_vocabularies: dict[tuple[str, int], tuple[float, list[str], frozenset[str]]] = {}
_vocabulary_lock = threading.Lock()
VOCABULARY_SECONDS = 60.0


def vocabulary(content_type: ContentType, using: str = "default") -> list[str]:
    """The distinct words of the products' names (cached for a minute)."""
    key = (using, content_type.pk)
    now = time.monotonic()
    with _vocabulary_lock:
        cached = _vocabularies.get(key)
    if cached and now - cached[0] < VOCABULARY_SECONDS:
        return cached[1]
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT word FROM ts_stat(format("
            "'SELECT setweight(to_tsvector(''simple'', names), ''A'') "
            "FROM shop_search_searchdocument WHERE content_type_id = %%s', %s))",
            [content_type.pk],
        )
        words = sorted(row[0] for row in cursor.fetchall())
    with _vocabulary_lock:
        _vocabularies[key] = (now, words, frozenset(words))
    return words


def clear_vocabularies() -> None:
    with _vocabulary_lock:
        _vocabularies.clear()


def correct(words: list[str], known: list[str]) -> dict[str, str]:
    """``{word: correction}`` for the words not in ``known``."""
    from rapidfuzz import process
    from rapidfuzz.distance import OSA

    present = frozenset(known)
    corrections = {}
    for word in words:
        if word in present or len(word) < 4 or word.isdigit():
            continue
        limit = 1 if len(word) < 8 else 2
        match = process.extractOne(word, known, scorer=OSA.distance, score_cutoff=limit)
        if match is not None:
            corrections[word] = match[0]
    return corrections


# --- the channels ----------------------------------------------------------------


def _tsquery(
    words: list[str], operator: str = "&", prefix_last: bool = False, weight: str = ""
) -> str:
    # Words are passed as tsquery lexemes, quoted: no user syntax reaches
    # to_tsquery. ``weight`` "A" restricts them to the names.
    quoted = ["'" + w.replace("'", "''").replace("\\", "\\\\") + "'" for w in words]
    quoted = [q + (":" + weight if weight else "") for q in quoted]
    if prefix_last and quoted:
        quoted[-1] = quoted[-1].replace(":" + weight, "") + ":*" + weight
    return f" {operator} ".join(quoted)


#: Query words used by the word channels (the rest of a long query is
#: ignored: a tsquery of a hundred words makes PostgreSQL scan every row).
MAX_WORDS = 12


def query_words(text: str) -> list[str]:
    """The distinct folded words of a query, at most ``MAX_WORDS``; single
    letters are dropped when longer words are there ("a", "x" match too
    much and say little)."""
    words = list(dict.fromkeys(tokens(text)))
    longer = [w for w in words if len(w) > 1 or w.isdigit()]
    return (longer or words)[:MAX_WORDS]


def _documents(
    queryset: models.QuerySet, content_type: ContentType
) -> tuple[str, list[Any]]:
    """
    SQL of the products' documents that ``queryset`` lets be found, to be
    inlined (``NOT MATERIALIZED``) into each channel, so that each finds its
    rows through its own index (GIN for words, HNSW for meaning) and only
    then checks them against the shop's queryset, by primary key.
    """
    using = queryset.db
    sql = (
        "SELECT d.object_pk, d.title, d.tsv, d.identifiers, d.vector, "
        "d.text_model FROM shop_search_searchdocument d "
        "WHERE d.content_type_id = %s "
    )
    if not queryset.query.where:
        # Every product may be found: a document is removed with its product
        # (shop_search_reindex removes those of rows deleted behind Django's
        # back), so there is nothing to check.
        return sql, [content_type.pk]
    candidates_sql, candidates_params = candidate_sql(queryset)
    pk_type = queryset.model._meta.pk.cast_db_type(connections[using])
    sql += f"AND EXISTS (SELECT 1 FROM ({candidates_sql}) AS c(pk) "
    sql += f"WHERE c.pk = d.object_pk::{pk_type})"
    return sql, [content_type.pk, *candidates_params]


def rank(
    queryset: models.QuerySet,
    query: str,
    query_vector: np.ndarray | None,
    *,
    text_model: str,
    depth: int,
    image: tuple[str, list[Any]] | None = None,
) -> Channels:
    """
    The text channels for ``query`` over the products of ``queryset``, each
    at most ``depth`` long, from one SQL statement. ``image``: SQL selecting
    ``(pk, distance)`` (:func:`~shop_search.ranking.image_channel_sql`), run
    in the same statement as the ``image`` channel.
    """
    using = queryset.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        queryset.model, for_concrete_model=False
    )
    words = query_words(query)
    result = Channels(words=words)
    if queryset.query.is_empty():  # e.g. a filter on a category that is gone
        return result
    cap = int(shop_search_settings.COUNT_CAP)
    docs, docs_params = _documents(queryset, content_type)
    parts: list[str] = []
    params: list[Any] = []
    identifier = fold(query).upper().strip()
    if identifier:
        parts.append(
            "(SELECT 'identifier', object_pk, 1.0::float FROM docs "
            "WHERE identifiers @> ARRAY[%s]::varchar[] LIMIT %s)"
        )
        params += [identifier, depth]
    if words:
        result.corrected = correct(words, vocabulary(content_type, using))
        fixed = [result.corrected.get(w, w) for w in words]
        queries = [("name", _tsquery(words))]
        if result.corrected:
            queries.append(("typo", _tsquery(fixed)))
        # Ranking every match of a common word ("red") would cost a
        # ts_rank_cd per row; at most RANK_POOL x depth matches are ranked
        # (they all have every word, so which ones barely matters: the
        # other channels order them).
        pool = RANK_POOL * depth
        ranked = (
            "(SELECT '{channel}', object_pk, ts_rank_cd(tsv, "
            "to_tsquery('simple', %s), 1)::float FROM (SELECT object_pk, tsv "
            "FROM docs WHERE tsv @@ to_tsquery('simple', %s){extra} LIMIT %s) AS m "
            "ORDER BY 3 DESC, 2 LIMIT %s)"
        )
        for channel, tsquery in queries:
            parts.append(ranked.format(channel=channel, extra=""))
            params += [tsquery, tsquery, pool, depth]
        if len(words) > 1:
            # Only when no product has every word (the NOT EXISTS runs
            # once): products with all words but one (any word, for two).
            every = queries[-1][1]
            some = _some_words(list(dict.fromkeys(fixed)))
            parts.append(
                ranked.format(
                    channel="some_words",
                    extra=" AND NOT EXISTS (SELECT 1 FROM docs "
                    "WHERE tsv @@ to_tsquery('simple', %s))",
                )
            )
            params += [some, some, every, pool, depth]
        best = queries[1][1] if result.corrected else queries[0][1]
        parts.append(
            "(SELECT 'count', NULL, count(*)::float FROM (SELECT 1 FROM docs "
            "WHERE tsv @@ to_tsquery('simple', %s) LIMIT %s) AS n)"
        )
        params += [best, cap + 1]
    if query_vector is not None:
        vector = vector_literal(query_vector)
        # Sorted again outside: a relaxed iterative scan (under a filter)
        # may return the nearest slightly out of order. The vector is sent
        # once: the index serves the order by the selected distance's name.
        parts.append(
            "(SELECT 'meaning', object_pk, (-d)::float FROM (SELECT object_pk, "
            "vector <#> %s::halfvec AS d "
            "FROM docs WHERE text_model = %s AND vector IS NOT NULL "
            "ORDER BY d LIMIT %s) AS m ORDER BY 3 DESC, 2)"
        )
        params += [vector, text_model, depth]
    if image is not None:
        image_sql, image_params = image
        parts.append(
            "(SELECT 'image', i.pk::text, least(1.0, -i.distance)::float "
            f"FROM ({image_sql}) AS i(pk, distance))"
        )
        params += image_params
    if not parts:
        return result
    sql = f"WITH docs AS NOT MATERIALIZED ({docs}) " + " UNION ALL ".join(parts)
    with hnsw_cursor(using) as cursor:
        cursor.execute(sql, [*docs_params, *params])
        rows = cursor.fetchall()
    for channel, key, score in rows:
        if channel == "count":
            result.word_matches = int(score)
        else:
            result.hits.setdefault(channel, []).append((key, float(score)))
    if result.hits.get("name"):
        # Every word matched as typed: the corrected query adds nothing.
        result.hits.pop("typo", None)
    if result.hits.get("name") or result.hits.get("typo"):
        result.hits.pop("some_words", None)
    return result


def _some_words(words: list[str]) -> str:
    """A tsquery for all of ``words`` but one (any of two; any of more than
    six, where the groups would grow as the square of the words)."""
    if len(words) <= 2 or len(words) > 6:
        return _tsquery(words, "|")
    groups = [
        "(" + _tsquery(words[:skip] + words[skip + 1 :]) + ")"
        for skip in range(len(words))
    ]
    return " | ".join(groups)


def suggest_titles(queryset: models.QuerySet, prefix: str, *, limit: int) -> list[str]:
    """
    Product names for autocomplete: every word of ``prefix`` in the names,
    the last one as a prefix ("Black che" -> "Black checked T-shirt");
    misspelt complete words are corrected first.
    """
    words = tokens(prefix)
    if not words or queryset.query.is_empty():
        return []
    using = queryset.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        queryset.model, for_concrete_model=False
    )
    ends_word = prefix[-1:].isspace()
    complete = words if ends_word else words[:-1]
    fixes = correct(complete, vocabulary(content_type, using))
    words = [fixes.get(w, w) for w in words][:MAX_WORDS]
    tsquery = _tsquery(words, prefix_last=not ends_word, weight="A")
    docs, docs_params = _documents(queryset, content_type)
    # A one-letter prefix matches much of the catalog: at most RANK_POOL x
    # limit x 25 matches are ranked (through the GIN index on tsv).
    sql = (
        f"WITH docs AS NOT MATERIALIZED ({docs}) "
        "SELECT title FROM (SELECT title, tsv FROM docs "
        "WHERE tsv @@ to_tsquery('simple', %s) LIMIT %s) AS m "
        "ORDER BY ts_rank_cd(tsv, to_tsquery('simple', %s)) DESC, "
        "length(title), title LIMIT %s"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(
            sql, [*docs_params, tsquery, RANK_POOL * limit * 25, tsquery, limit * 3]
        )
        titles = [row[0] for row in cursor.fetchall()]
    return list(dict.fromkeys(titles))[:limit]


def best_meaning(
    queryset: models.QuerySet, query_vector: np.ndarray, *, text_model: str
) -> float:
    """The best meaning similarity of ``query_vector`` over the products
    (-1.0 when none has a text vector)."""
    using = queryset.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        queryset.model, for_concrete_model=False
    )
    with connections[using].cursor() as cursor:
        vector = vector_literal(query_vector)
        cursor.execute(
            "SELECT -(vector <#> %s::halfvec) FROM shop_search_searchdocument "
            "WHERE content_type_id = %s AND text_model = %s AND vector IS NOT NULL "
            "ORDER BY vector <#> %s::halfvec LIMIT 1",
            [vector, content_type.pk, text_model, vector],
        )
        row = cursor.fetchone()
    return -1.0 if row is None else float(row[0])
