"""
The only read path: every search reads vectors through this module.

Each function takes a base queryset (the shop's own filters: category, price,
stock, channel...) and returns a :class:`Page` of :class:`Hit` (product and
similarity score, highest first). Filters run in the same SQL query as the
HNSW ordering, with pgvector's iterative index scans, and a page that asks
for k products returns k whenever at least k products match: if the index
scan gives up early (``MAX_SCAN_TUPLES``), the page is refilled by an exact
scan. Only vectors made by the current ``IMAGE_MODEL`` are compared.
"""

from __future__ import annotations

import json
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models, transaction
from django.db.models import ExpressionWrapper, FloatField
from django.db.models.functions import Cast
from pgvector.django import MaxInnerProduct

from . import result_cache
from .conf import import_from_setting, shop_search_settings
from .exceptions import SearchBusy, ShopSearchError
from .images import load_image
from .models import SearchableProduct, searchable_models
from .switching import serving

__all__ = [
    "Hit",
    "Page",
    "QueryError",
    "product_model",
    "visible_products",
    "normalize_query",
    "text_vector",
    "image_vector",
    "nearest",
    "search_text",
    "search_image",
    "similar_products",
    "shop_the_look",
    "Look",
    "LookItem",
]


class QueryError(ShopSearchError):
    """A search query that cannot be run (empty, too long, bad parameters)."""

    code = "invalid_query"


@dataclass
class Hit:
    """One result: the product and its cosine similarity to the query."""

    object: Any
    score: float


@dataclass
class Page:
    """A page of results. ``has_more``: a next page exists at ``offset + limit``."""

    hits: list[Hit]
    limit: int
    offset: int
    has_more: bool
    exact: bool = False  # the page was filled by an exact scan
    extra: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


def product_model() -> type[SearchableProduct]:
    """The model searched by the API and the page (``PRODUCT_MODEL``)."""
    label = shop_search_settings.PRODUCT_MODEL
    if label:
        model = apps.get_model(label)
        if not issubclass(model, SearchableProduct):
            raise ImproperlyConfigured(
                f"SHOP_SEARCH['PRODUCT_MODEL'] = {label!r} does not inherit "
                f"shop_search.models.SearchableProduct."
            )
        return model
    models_ = searchable_models()
    if len(models_) != 1:
        names = ", ".join(m._meta.label for m in models_) or "none"
        raise ImproperlyConfigured(
            f"Set SHOP_SEARCH['PRODUCT_MODEL'] to the model to search "
            f"(searchable models: {names})."
        )
    return models_[0]


def visible_products(request: Any = None) -> models.QuerySet:
    """
    The products shoppers may find: ``VISIBLE_PRODUCTS(request)``, or all
    products of :func:`product_model`. Every view starts from this queryset,
    so one declaration hides a product from every read.
    """
    if shop_search_settings.VISIBLE_PRODUCTS:
        queryset = import_from_setting("VISIBLE_PRODUCTS")(request)
        model = product_model()
        if getattr(queryset, "model", None) is not model:
            raise ImproperlyConfigured(
                f"SHOP_SEARCH['VISIBLE_PRODUCTS'] must return a queryset of "
                f"{model._meta.label}, not {queryset!r}."
            )
        return queryset
    return product_model()._default_manager.all()


# --- query vectors -----------------------------------------------------------


_DROPPED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def _is_dropped(ch: str) -> bool:
    # Format characters outside the BMP (tag characters...) are left alone.
    return ord(ch) < 0x10000 and unicodedata.category(ch) in _DROPPED_CATEGORIES


def _invisible_ranges() -> list[tuple[int, int]]:
    """BMP code points a query may not consist of only: dropped or whitespace."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        ch = chr(code)
        if _is_dropped(ch) or ch.isspace() or 0xD800 <= code <= 0xDFFF:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return ranges


#: A regular expression (for the OpenAPI schema) matching a query with at
#: least one character that survives :func:`normalize_query`.
VISIBLE_PATTERN = (
    "[^"
    + "".join(
        f"\\u{a:04X}" if a == b else f"\\u{a:04X}-\\u{b:04X}"
        for a, b in _invisible_ranges()
    )
    + "]"
)


def normalize_query(query: Any) -> str:
    """
    NFC-normalise, drop control and format characters, collapse whitespace.

    Raises :class:`QueryError` (``query_empty`` / ``query_too_long``).
    """
    if not isinstance(query, str):
        raise QueryError("The query must be text.", code="query_invalid")
    text = unicodedata.normalize("NFC", query)
    text = "".join(" " if _is_dropped(ch) else ch for ch in text)
    text = " ".join(text.split())
    if not text:
        raise QueryError("The query is empty.", code="query_empty")
    limit = shop_search_settings.MAX_QUERY_LENGTH
    if len(text) > limit:
        raise QueryError(
            f"The query is {len(text)} characters long; the limit is {limit}.",
            code="query_too_long",
        )
    return text


class _LRU:
    """A small thread-safe LRU cache of query vectors."""

    def __init__(self) -> None:
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        size = shop_search_settings.QUERY_CACHE_SIZE
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > max(size, 0):
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


query_cache = _LRU()


class _Job:
    """A text query waiting to be encoded, alone or batched with others."""

    __slots__ = ("encoder", "text", "vector", "error", "taken", "done")

    def __init__(self, encoder: Any, text: str) -> None:
        self.encoder, self.text = encoder, text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.taken = False  # into another request's batch
        self.done = False


class _EncoderGate:
    """
    Bounds the query encodings running at once (``QUERY_CONCURRENCY``) and
    how long and how many requests wait for one; past that, :class:`SearchBusy`
    (the API answers 503 with Retry-After) instead of an unbounded queue.

    Text queries that arrive while the encoders are busy are encoded together
    when a slot frees up: one forward pass over 8 short queries costs about
    twice one over a single query, so under load a process answers several
    times as many new queries per second, and alone a query never waits.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: list[_Job] = []
        self.running = self.waiting = 0

    def _acquire(self, job: _Job | None = None) -> bool:
        """Take a slot (True), or see ``job`` done in another's batch (False).
        Called with the lock held."""
        limit = max(1, int(shop_search_settings.QUERY_CONCURRENCY))
        timeout = float(shop_search_settings.QUERY_QUEUE_TIMEOUT)
        if self.running >= limit and (
            self.waiting >= shop_search_settings.QUERY_MAX_WAITING
        ):
            raise SearchBusy("Too many searches are waiting; try again shortly.")
        self.waiting += 1
        try:
            ready = self._lock.wait_for(
                lambda: self.running < limit or (job is not None and job.taken),
                timeout,
            )
        finally:
            self.waiting -= 1
        if job is not None and job.taken:
            # Being encoded in another request's batch: wait for that, even
            # past the timeout, since its vector is moments away.
            self._lock.wait_for(lambda: job.done)
            return False
        if not ready:
            raise SearchBusy("Search is busy; try again shortly.")
        self.running += 1
        return True

    def _release(self) -> None:
        self.running -= 1
        self._lock.notify_all()

    def __enter__(self) -> None:
        with self._lock:
            self._acquire()

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._release()

    def encode_text(self, encoder: Any, text: str) -> np.ndarray:
        """``encoder``'s vector for ``text``, batched with other waiting queries."""
        job = _Job(encoder, text)
        with self._lock:
            self._queue.append(job)
            try:
                leading = self._acquire(job)
            finally:
                if not job.taken:
                    self._queue.remove(job)
            if leading:
                # This request encodes its query and the others waiting for
                # the same encoder, oldest first.
                size = max(1, int(shop_search_settings.BATCH_SIZE))
                batch = [job] + [j for j in self._queue if j.encoder is encoder]
                batch = batch[:size]
                for other in batch[1:]:
                    other.taken = True
                    self._queue.remove(other)
        if leading:
            try:
                vectors = encoder.encode_texts([j.text for j in batch])
            except BaseException as exc:
                vectors = [None] * len(batch)
                error: BaseException | None = exc
            else:
                error = None
            with self._lock:
                for other, vector in zip(batch, vectors, strict=True):
                    other.vector, other.error, other.done = vector, error, True
                self._release()
        if job.error is not None:
            raise job.error
        return job.vector


encoder_gate = _EncoderGate()


def text_vector(query: str, encoder: Any = None) -> np.ndarray:
    """The (cached) embedding of a normalised text query (serving text model)."""
    encoder = encoder or serving().text_encoder
    key = (encoder.model_id, query)
    vector = query_cache.get(key)
    if vector is None:
        vector = encoder_gate.encode_text(encoder, query)
        vector.setflags(write=False)
        query_cache.put(key, vector)
    return vector


def image_vector(source: Any, encoder: Any = None) -> np.ndarray:
    """The embedding of an uploaded image (bytes, file, path). Raises ImageError."""
    image = load_image(source, upload=True)
    encoder = encoder or serving().image_encoder
    with encoder_gate:
        return encoder.encode_images([image])[0]


# --- nearest neighbours ---------------------------------------------------------


def nearest(
    queryset: models.QuerySet,
    vector: np.ndarray,
    *,
    limit: int | None = None,
    offset: int = 0,
    min_score: float | None = None,
    image_model: str | None = None,
) -> Page:
    """
    The products of ``queryset`` nearest to ``vector``, best first.

    ``vector`` must come from the serving models' space; only rows whose
    vector was made by ``image_model`` (default: the serving image model)
    are compared. ``min_score`` (default ``MIN_SCORE``) drops weaker results.
    """
    limit = _check_limit(limit, offset)
    if min_score is None:
        min_score = shop_search_settings.MIN_SCORE
    model = queryset.model
    embedding = model._meta.get_field("search_embedding")
    query = Cast(
        models.Value(embedding.get_prep_value(vector)), output_field=embedding.clone()
    )
    candidates = queryset.filter(
        search_embedding__isnull=False,
        search_model=image_model or serving(queryset.db).image_model,
    ).defer("search_embedding")  # 512 numbers a row that results do not show
    cache_key = result_cache.ranking_key(
        candidates, vector, limit=limit, offset=offset, min_score=min_score
    )
    cached = result_cache.get(cache_key)
    if cached is not None:
        return _cached_page(candidates, cached, limit=limit, offset=offset)
    distance = MaxInnerProduct("search_embedding", query)
    window = slice(offset, offset + limit + 1)
    # Ordering by an expression the index cannot serve makes PostgreSQL scan
    # the (filtered) rows exactly.
    exact_distance = ExpressionWrapper(distance * 1.0, output_field=FloatField())
    exact_order = candidates.annotate(_distance=exact_distance).order_by("_distance")
    threshold = int(shop_search_settings.EXACT_SCAN_THRESHOLD)
    if threshold and estimated_rows(candidates) <= threshold:
        # Few candidates (a selective filter, a small shop): an exact scan
        # finds the true nearest, where a filtered HNSW scan can miss some (it
        # follows the graph of all products).
        rows = list(exact_order[window])
        exact = True
    else:
        # ORDER BY "embedding <#> query" is what the HNSW index serves.
        indexed = candidates.annotate(_distance=distance).order_by("_distance")
        rows = _run(indexed[window], queryset.db)
        exact = False
        if len(rows) <= limit and candidates.count() > offset + len(rows):
            # The iterative scan stopped before the page was full.
            rows = list(exact_order[window])
            exact = True
    has_more = len(rows) > limit
    # halfvec rounding can put a perfect match a hair above 1.
    hits = [Hit(row, min(1.0, -float(row._distance))) for row in rows[:limit]]
    if min_score is not None:
        kept = [hit for hit in hits if hit.score >= min_score]
        has_more = has_more and len(kept) == len(hits)
        hits = kept
    result_cache.put(
        cache_key,
        ([hit.object.pk for hit in hits], [hit.score for hit in hits], has_more, exact),
    )
    return Page(hits=hits, limit=limit, offset=offset, has_more=has_more, exact=exact)


def _cached_page(
    candidates: models.QuerySet, cached: Any, *, limit: int, offset: int
) -> Page:
    """A page from a cached ranking, its products read through ``candidates``
    again (a product deleted or hidden since drops out)."""
    pks, scores, has_more, exact = cached
    rows = candidates.in_bulk(pks)
    hits = [
        Hit(rows[pk], score)
        for pk, score in zip(pks, scores, strict=True)
        if pk in rows
    ]
    return Page(hits=hits, limit=limit, offset=offset, has_more=has_more, exact=exact)


def estimated_rows(queryset: models.QuerySet) -> int:
    """
    PostgreSQL's estimate of the rows ``queryset`` matches: planning only, no
    rows read, so it costs one round trip (about a millisecond) at any catalog
    size. It is close for filters on columns with statistics (``ANALYZE``,
    which autovacuum runs); index the columns your filters use.
    """
    plan = json.loads(queryset.order_by().values("pk").explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def _run(queryset: models.QuerySet, using: str) -> list[Any]:
    """Evaluate an index-ordered query with this module's HNSW settings."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', 'strict_order', true), "
            "set_config('hnsw.max_scan_tuples', %s, true)",
            [
                str(int(shop_search_settings.EF_SEARCH)),
                str(int(shop_search_settings.MAX_SCAN_TUPLES)),
            ],
        )
        return list(queryset)


def _check_limit(limit: int | None, offset: int) -> int:
    if limit is None:
        limit = shop_search_settings.DEFAULT_LIMIT
    maximum = shop_search_settings.MAX_LIMIT
    if not 1 <= limit <= maximum:
        raise QueryError(f"limit must be from 1 to {maximum}.", code="invalid_limit")
    if offset < 0:
        raise QueryError("offset must be 0 or more.", code="invalid_offset")
    return limit


# --- the searches -----------------------------------------------------------------


def search_text(
    queryset: models.QuerySet, query: str, *, current: Any = None, **options: Any
) -> Page:
    """
    Products whose images match a text query in any supported language.
    ``current`` (a :class:`~shop_search.switching.Serving`) saves a lookup
    when the caller already has it.
    """
    current = current or serving(queryset.db)
    vector = text_vector(normalize_query(query), current.text_encoder)
    return nearest(queryset, vector, image_model=current.image_model, **options)


def search_image(queryset: models.QuerySet, image: Any, **options: Any) -> Page:
    """Products whose images look like an uploaded photo."""
    current = serving(queryset.db)
    vector = image_vector(image, current.image_encoder)
    return nearest(queryset, vector, image_model=current.image_model, **options)


def similar_products(queryset: models.QuerySet, product: Any, **options: Any) -> Page:
    """
    Products that look like ``product`` (its stored vector; nothing is
    re-encoded), without the product itself. An unindexed product has none.
    """
    vector = product.search_embedding
    current = serving(queryset.db)
    if vector is None or product.search_model != current.image_model:
        limit = _check_limit(options.get("limit"), options.get("offset", 0))
        return Page(
            hits=[], limit=limit, offset=options.get("offset", 0), has_more=False
        )
    return nearest(
        queryset.exclude(pk=product.pk),
        vector,
        image_model=current.image_model,
        **options,
    )


# --- shop the look ----------------------------------------------------------------


@dataclass
class LookItem:
    """An item found in the photo, with the products that match it."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the uploaded image's pixels
    category: Any
    score: float
    page: Page


@dataclass
class Look:
    """Shop-the-look results: per detected item, and for the whole image."""

    items: list[LookItem]
    whole_image: Page
    image_size: tuple[int, int]


def shop_the_look(
    queryset: models.QuerySet, image: Any, *, limit: int | None = None
) -> Look:
    """
    Detect the items in an outfit or room photo and find products for each.

    Each item's products are searched within the item's category when the
    model has ``search_category_field`` (falling back to all products if that
    category has none), and always for the whole image too.
    """
    from .categories import all_categories, in_category

    picture = load_image(image, upload=True)
    model = queryset.model
    categories = all_categories(model) if model.search_category_field else []
    current = serving(queryset.db)
    with encoder_gate:
        detections, vectors = _detect_and_encode(picture, categories, current)
    width, height = picture.info.get("original_size", picture.size)
    sx, sy = width / picture.width, height / picture.height
    items = []
    for detection, vector in zip(detections, vectors[1:], strict=True):
        page = Page(hits=[], limit=1, offset=0, has_more=False)
        if model.search_category_field:
            page = nearest(
                in_category(queryset, detection.category),
                vector,
                limit=limit,
                image_model=current.image_model,
            )
        if not page.hits:
            page = nearest(
                queryset, vector, limit=limit, image_model=current.image_model
            )
        x0, y0, x1, y1 = detection.box
        box = (
            max(0, round(x0 * sx)),
            max(0, round(y0 * sy)),
            min(width, round(x1 * sx)),
            min(height, round(y1 * sy)),
        )
        items.append(LookItem(box, detection.category, detection.score, page))
    return Look(
        items=items,
        whole_image=nearest(
            queryset, vectors[0], limit=limit, image_model=current.image_model
        ),
        image_size=(width, height),
    )


def _detect_and_encode(
    picture: Any, categories: list[Any], current: Any
) -> tuple[list, np.ndarray]:
    """Detected items (boxes too small to crop are dropped) and the vectors of
    the whole picture followed by each item's crop."""
    from .detectors import get_detector

    # Boxes of a few pixels are not items, and would make empty crops.
    minimum = max(4.0, 0.02 * min(picture.size))
    detections = [
        d
        for d in get_detector().detect(picture, categories, current)
        if d.box[2] - d.box[0] >= minimum and d.box[3] - d.box[1] >= minimum
    ]
    crops = [picture.crop(tuple(round(v) for v in d.box)) for d in detections]
    return detections, current.image_encoder.encode_images([picture, *crops])
