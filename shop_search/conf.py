"""
Settings for shop_search, read from the ``SHOP_SEARCH`` dict in Django settings.

Every key has a default in ``DEFAULTS``; the project's dict is merged over it.
Values are read at call time (``shop_search_settings.IMAGE_MODEL``) and the cache
is dropped whenever ``SHOP_SEARCH`` changes (``override_settings`` in tests), in
the manner of ``rest_framework.settings``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

__all__ = ["DEFAULTS", "shop_search_settings", "import_from_setting"]

DEFAULTS: dict[str, Any] = {
    # Sentence-transformers model for product images: a hub name or a local path.
    "IMAGE_MODEL": "clip-ViT-B-32",
    # Multilingual text model aligned to the image model's vector space.
    "TEXT_MODEL": "sentence-transformers/clip-ViT-B-32-multilingual-v1",
    # The class that loads the models and turns images/texts into vectors.
    "ENCODER_CLASS": "shop_search.encoders.SentenceTransformerEncoder",
    # torch device for inference ("cpu", "cuda", "cuda:1", "mps"); None picks one.
    "DEVICE": None,
    # Images per forward pass, and products per database chunk when indexing.
    "BATCH_SIZE": 32,
    # The admin's "Re-index selected products" encodes in the request (sync
    # mode): more products than this are refused with a message.
    "ADMIN_REINDEX_LIMIT": 500,
    # "auto" (default): the fastest precision whose vectors stay within
    # cosine 0.995 of fp32 on this machine, chosen and logged at load (int8 on
    # ONNX Runtime; on torch bf16 with AMX, else int8; fp16 on a CUDA GPU),
    # checked on a fixed probe and vetoed back to fp32 if it drifts. Or
    # explicitly "fp32", "bf16" (bfloat16 autocast: fast with AMX and on
    # GPUs, many times slower without bf16 instructions), "int8" (dynamic
    # int8 quantization of the linear layers, CPU only) or "fp16" (CUDA
    # only). Never changes the vectors' model: no reindexing.
    "PRECISION": "auto",
    # Inference runtime: "auto" (default: ONNX Runtime on a CPU when
    # onnxruntime is installed, `pip install shop-search[onnx]`, and PRECISION
    # is not bf16; else torch), "torch" or "onnx". ONNX graphs are exported on
    # first use, cached beside the model (or under HF_HOME) and checked against
    # torch at load (cosine 0.999); a graph that fails falls back to torch.
    "BACKEND": "auto",
    # "sync": encode right after the product's transaction commits, in-process.
    # "celery": send shop_search.tasks.index_products to the shop's Celery app.
    "INDEXING_MODE": "sync",
    # Encoding attempts before a product is set aside (listed, not retried).
    "MAX_ATTEMPTS": 3,
    # Celery task retries (with exponential backoff) for infrastructure errors.
    "TASK_MAX_RETRIES": 5,
    # Image safety limits, checked from the header before decoding.
    "MAX_IMAGE_BYTES": 20 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": 40_000_000,
    # Shoppers' uploads (photo search, shop the look, category suggestions)
    # get a lower pixel limit than the shop's own product images: decoding
    # costs memory in proportion to pixels, and anyone can upload.
    "MAX_UPLOAD_PIXELS": 12_000_000,
    # Progressive JPEG scans accepted (libjpeg-turbo's own tools stop at 100):
    # every scan decodes the whole image again, so repeated scans are a
    # decoding-time bomb in a small file.
    "MAX_JPEG_SCANS": 100,
    # Seconds one image may take to decode before it is refused.
    "MAX_DECODE_SECONDS": 5.0,
    # Shoppers' images decoded at once per process; a further upload waits at
    # most DECODE_QUEUE_TIMEOUT seconds, then gets 503 with Retry-After.
    "MAX_CONCURRENT_DECODES": 2,
    "DECODE_QUEUE_TIMEOUT": 5.0,
    # --- Search (the read path) ---
    # The searchable model the API and the page search ("app_label.Model");
    # None: the only model that inherits SearchableProduct.
    "PRODUCT_MODEL": None,
    # The products shoppers may find, for every read (text, photo, similar,
    # shop the look, the page): a dotted path to a function taking the
    # request (or None) and returning a queryset of PRODUCT_MODEL, e.g.
    # published, priced and in the request's channel. None: all products.
    "VISIBLE_PRODUCTS": None,
    # The database alias searches read from (a streaming replica); None: the
    # product queryset's own. Writes (indexing) and status stay on the
    # primary; a just-saved product is found once the replica has replayed it.
    "READ_DATABASE": None,
    # Drop results whose similarity is below this (None: keep all). CLIP
    # text-to-image similarities of good matches are typically 0.25-0.35.
    "MIN_SCORE": None,
    # --- Text search: the product's own words fused with its image ---
    # Reciprocal rank fusion: a product's score is the sum over the channels
    # that found it of weight / (RRF_K + its rank there). "identifier": the
    # query is its SKU/GTIN; "name": all query words are in its words;
    # "typo": the same after spelling correction; "some_words": some query
    # words (only when no product has them all); "meaning": the text model's
    # embedding of its names; "image": its image.
    "CHANNEL_WEIGHTS": {
        "identifier": 4.0,
        "name": 2.0,
        "typo": 2.0,
        "some_words": 1.0,
        "meaning": 1.0,
        "image": 1.0,
    },
    "RRF_K": 60,
    # Hits each channel contributes to the fusion (deeper pages use more).
    "CHANNEL_DEPTH": 100,
    # Matching products are counted exactly up to this many ("1000+").
    "COUNT_CAP": 1000,
    # When no product's words match and no image or meaning scores above
    # the noise floor (what nonsense queries score on this catalog with the
    # serving models, measured at run time), answer no_match instead of
    # showing random neighbours. False: always show the nearest.
    "NO_MATCH": True,
    # Sort orders besides "relevance": parameter value -> order_by() fields.
    "SORTS": {"price": ["price", "pk"], "-price": ["-price", "pk"]},
    # Seconds a search statement may run before PostgreSQL cancels it (503).
    "STATEMENT_TIMEOUT": 5.0,
    # Query embeddings kept in memory (per process), so a repeated query is
    # not encoded again.
    "QUERY_CACHE_SIZE": 1024,
    # Seconds a text-search API response is reused for the same query, filters
    # and page (0: off). Bounds how long a product change takes to show there.
    "RESULT_CACHE_SECONDS": 30,
    # The Django cache (CACHES alias) for those responses.
    "CACHE_ALIAS": "default",
    "MAX_QUERY_LENGTH": 200,
    # HNSW candidate list size per query (pgvector hnsw.ef_search), and the
    # most tuples an iterative (filtered) scan may visit before shop_search
    # falls back to an exact scan to fill the page.
    "EF_SEARCH": 400,
    "MAX_SCAN_TUPLES": 20_000,
    # When PostgreSQL estimates a query's candidate image vectors (the
    # products its filters leave, times the catalog's images per product) at
    # this many or fewer, rank them exactly instead of through the HNSW
    # index: full recall for selective filters and small catalogs. The exact
    # scan reads each candidate's vectors by key (about 5 to 8 microseconds a
    # vector on 2 cores, BENCHMARKS.md "Storage"); past this many, the index
    # with an iterative scan is faster at recall@10 0.98 or more. Index the
    # columns your filters use, so the estimate is close. 0: always the index.
    "EXACT_SCAN_THRESHOLD": 5_000,
    # Back-pressure: at most this many query encodings run at once per
    # process; a request waits at most QUERY_QUEUE_TIMEOUT seconds (and at
    # most QUERY_MAX_WAITING requests wait) before the API answers 503.
    "QUERY_CONCURRENCY": 2,
    "QUERY_QUEUE_TIMEOUT": 3.0,
    "QUERY_MAX_WAITING": 16,
    # Page size limits for the API and the page.
    "DEFAULT_LIMIT": 24,
    "MAX_LIMIT": 100,
    # Query parameter -> ORM lookup on the product model, for API/page filters.
    # The category parameter is added from search_category_field.
    "FILTERS": {},
    # Category suggestions: prompt templates per language ({} is the name),
    # and CLIP's logit scale for the softmax.
    "CATEGORY_PROMPTS": {
        "en": "a photo of a {}",
        "de": "ein Foto von {}",
        "fr": "une photo de {}",
        "es": "una foto de {}",
        "it": "una foto di {}",
        "zh": "{}的照片",
        "ja": "{}の写真",
        "ar": "صورة {}",
        "ru": "фотография: {}",
        "hi": "{} की तस्वीर",
    },
    "CATEGORY_LOGIT_SCALE": 100.0,
    # The admin action "Apply suggested categories" changes a product's
    # category only when the top suggestion is at least this likely.
    "CATEGORY_APPLY_THRESHOLD": 0.6,
    # Shop the look: the detector class, and its thresholds.
    "DETECTOR_CLASS": "shop_search.detectors.CropDetector",
    "DETECTOR_MODEL": "google/owlvit-base-patch32",
    "DETECTION_MIN_SCORE": 0.3,
    "DETECTION_MAX_ITEMS": 5,
    # Prompts for a "background" class: crops most like these are not items.
    # An empty list turns the background class off.
    "DETECTION_BACKGROUND_PROMPTS": [
        "a photo of an empty background",
        "a blank wall",
        "a plain white surface",
    ],
    # The storefront page's result card: how to read a product's price and
    # link. An attribute or method name of the product ("price",
    # "get_absolute_url"), or a dotted path to a function (product, request)
    # -> value, for prices on stock records or URLs by slug. None: not shown.
    "RESULT_PRICE": "price",
    "RESULT_URL": "get_absolute_url",
    # API: the product serializer, and throttle rates per scope.
    "PRODUCT_SERIALIZER": "shop_search.api.serializers.ProductSerializer",
    # shop_search_auth counts failed logins (wrong HTTP Basic passwords...)
    # per client; past it, the client gets 429 before its credentials are
    # even checked. The page uses the same scopes as the API.
    "THROTTLE_RATES": {
        "shop_search_text": "120/min",
        "shop_search_image": "20/min",
        "shop_search_auth": "10/min",
    },
    # Reverse proxies in front of the site that append to X-Forwarded-For.
    # 0 (default): the client is REMOTE_ADDR and X-Forwarded-For is ignored,
    # since any client can send one. Behind one proxy (nginx, a load
    # balancer) set 1: the client is the address that proxy appended.
    "NUM_PROXIES": 0,
}


class ShopSearchSettings:
    """Attribute access to ``SHOP_SEARCH`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cached: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        from django.conf import settings

        value = getattr(settings, "SHOP_SEARCH", {})
        if not isinstance(value, dict):
            raise ImproperlyConfigured(
                "SHOP_SEARCH must be a dict, for example "
                "SHOP_SEARCH = {'IMAGE_MODEL': 'clip-ViT-B-32'}."
            )
        return value

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid shop_search setting: {name!r}")
        if self._cached is None:
            unknown = set(self.user_settings) - set(DEFAULTS)
            if unknown:
                raise ImproperlyConfigured(
                    f"Unknown key(s) in SHOP_SEARCH: {', '.join(sorted(unknown))}. "
                    f"Known keys: {', '.join(DEFAULTS)}."
                )
            self._cached = {**DEFAULTS, **self.user_settings}
        return self._cached[name]

    def reload(self) -> None:
        self._cached = None


shop_search_settings = ShopSearchSettings()


def import_from_setting(name: str) -> Any:
    """Import the dotted path held by setting ``name``; a failure names the fix."""
    path = getattr(shop_search_settings, name)
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"Could not import {path!r} for SHOP_SEARCH[{name!r}]: {exc}. "
            f"Set it to an importable dotted path, or remove it to use the default "
            f"{DEFAULTS[name]!r}."
        ) from exc


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "SHOP_SEARCH":
        shop_search_settings.reload()


setting_changed.connect(_reload, dispatch_uid="shop_search.conf.reload")
