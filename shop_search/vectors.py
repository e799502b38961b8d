"""
Query vectors: normalising a text query, the per-process cache of query
vectors, and the gate that bounds (and batches) query encodings.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from typing import Any

import numpy as np

from .conf import shop_search_settings
from .exceptions import SearchBusy, ShopSearchError
from .images import load_image
from .switching import serving

__all__ = [
    "QueryError",
    "VISIBLE_PATTERN",
    "normalize_query",
    "query_cache",
    "encoder_gate",
    "text_vector",
    "image_vector",
]


class QueryError(ShopSearchError):
    """A search query that cannot be run (empty, too long, bad parameters)."""

    code = "invalid_query"


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
        if len(query.strip()) > limit:
            raise QueryError(
                f"The query is {len(text)} characters long; the limit is {limit}.",
                code="query_too_long",
            )
        # Within the limit as sent (what the API's schema counts), longer
        # once normalised (NFC makes U+1D15E two characters): cut, not
        # refused.
        text = unicodedata.normalize("NFC", text[:limit]).rstrip()
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
    """The embedding of an uploaded image (bytes, file, path, or a picture
    :func:`~shop_search.images.load_image` already decoded). Raises
    ImageError."""
    image = as_picture(source)
    encoder = encoder or serving().image_encoder
    with encoder_gate:
        return encoder.encode_images([image])[0]


def as_picture(source: Any) -> Any:
    """``source`` decoded as a shopper's upload, unless it already is."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    return load_image(source, upload=True)
