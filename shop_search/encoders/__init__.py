"""
Encoders turn images and texts into vectors of one space.

``get_image_encoder()`` and ``get_text_encoder()`` return the process-wide
encoders for ``SHOP_SEARCH['IMAGE_MODEL']`` and ``['TEXT_MODEL']``, built from
``ENCODER_CLASS`` on first use. Loading the model itself is deferred further,
to the first encode.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed

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


def _forget_on_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "SHOP_SEARCH":
        # Encoders depend on the model settings; drop the loaded ones.
        clear_encoders()


setting_changed.connect(
    _forget_on_settings_change, dispatch_uid="shop_search.encoders.clear"
)
