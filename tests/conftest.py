from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image

from shop_search.testing import build_test_models

_sku = itertools.count(1)


def pytest_configure(config: Any) -> None:
    # Idempotent: a few seconds the first time, instant afterwards.
    build_test_models(settings.TEST_MODELS_DIR)


def png_bytes(
    colour: Any = "red",
    size: tuple[int, int] = (64, 64),
    mode: str = "RGB",
    fmt: str = "PNG",
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def category(db: Any) -> Any:
    from demo_shop.catalog.models import Category

    return Category.objects.create(
        name="Dresses", slug="dresses", translations={"de": "Kleider"}
    )


@pytest.fixture
def make_product(category: Any) -> Any:
    from demo_shop.catalog.models import Product

    def make(
        image: bytes | None = None,
        *,
        colour: str = "red",
        save: bool = True,
        **fields: Any,
    ) -> Product:
        n = next(_sku)
        product = Product(
            sku=f"T-{n}",
            name=fields.pop("name", f"Product {n}"),
            price="10.00",
            category=fields.pop("category", category),
            **fields,
        )
        data = png_bytes(colour) if image is None else image
        if data:
            product.image.save(f"p{n}.png", ContentFile(data), save=False)
        if save:
            product.save()
        return product

    return make


@pytest.fixture
def encode_spy(monkeypatch: Any) -> list[int]:
    """Records how many images each call to the real image encoder received."""
    from shop_search.encoders import get_image_encoder

    encoder = get_image_encoder()
    original = encoder.encode_images
    calls: list[int] = []

    def spy(images: Any) -> Any:
        calls.append(len(images))
        return original(images)

    monkeypatch.setattr(encoder, "encode_images", spy)
    return calls
