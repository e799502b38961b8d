"""
Encoders turn images and texts into vectors of one space.

``get_image_encoder()`` and ``get_text_encoder()`` return the process-wide
encoders for ``SHOP_SEARCH['IMAGE_MODEL']`` and ``['TEXT_MODEL']``, built from
``ENCODER_CLASS`` on first use. Loading the model itself is deferred further,
to the first encode.
"""

from __future__ import annotations

import threading

from ..conf import import_from_setting, shop_search_settings
from .base import BaseEncoder
from .sentence_transformers import SentenceTransformerEncoder

__all__ = [
    "BaseEncoder",
    "SentenceTransformerEncoder",
    "get_image_encoder",
    "get_text_encoder",
    "encoder_for",
    "image_model_id",
    "clear_encoders",
    "warm_up",
]

_encoders: dict[str, BaseEncoder] = {}
_lock = threading.Lock()


def encoder_for(model_name: str) -> BaseEncoder:
    """The process-wide encoder of ``model_name`` (built on first use)."""
    encoder = _encoders.get(model_name)
    if encoder is None:
        with _lock:
            encoder = _encoders.get(model_name)
            if encoder is None:
                encoder_class = import_from_setting("ENCODER_CLASS")
                encoder = encoder_class(
                    model_name,
                    device=shop_search_settings.DEVICE,
                    batch_size=shop_search_settings.BATCH_SIZE,
                    precision=shop_search_settings.PRECISION,
                    backend=shop_search_settings.BACKEND,
                )
                _encoders[model_name] = encoder
    return encoder


def get_image_encoder() -> BaseEncoder:
    """The encoder for product images (``SHOP_SEARCH['IMAGE_MODEL']``)."""
    return encoder_for(shop_search_settings.IMAGE_MODEL)


def get_text_encoder() -> BaseEncoder:
    """The encoder for query texts (``SHOP_SEARCH['TEXT_MODEL']``)."""
    return encoder_for(shop_search_settings.TEXT_MODEL)


def image_model_id() -> str:
    """The ``search_model`` value that current vectors carry; loads nothing."""
    return get_image_encoder().model_id


def clear_encoders() -> None:
    """Forget loaded encoders (after a settings change)."""
    with _lock:
        _encoders.clear()


def warm_up() -> None:
    """
    Load both models and run one tiny forward pass each, so that the first
    shopper's request does not pay for it. Call it from ``wsgi.py`` (after
    ``get_wsgi_application()``) or a worker's start hook.
    """
    from PIL import Image

    from ..switching import serving

    current = serving()
    current.text_encoder.encode_texts(["warm up"])
    current.image_encoder.encode_images([Image.new("RGB", (32, 32), "white")])
