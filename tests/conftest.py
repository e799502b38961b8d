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

#: The same request in six languages and scripts.
QUERIES = [
    "red dress",
    "rotes Kleid",
    "红色连衣裙",
    "فستان أحمر",
    "красное платье",
    "लाल पोशाक",
]


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


@pytest.fixture(autouse=True)
def _fresh_search_caches() -> None:
    """The vocabulary and noise floors are cached per process for a minute
    and ten minutes (a shop's catalog changes slowly); each test's catalog
    is new."""
    from shop_search import calibration, lexical

    lexical.clear_vocabularies()
    calibration.clear()


@pytest.fixture
def category(db: Any) -> Any:
    from demo_shop.catalog.models import Category

    return Category.objects.create(
        name="Dresses", slug="dresses", translations={"de": "Kleider"}
    )


@pytest.fixture
def catalog(category: Any) -> tuple[Any, Any]:
    """Dresses and Shoes, 50 synthetic indexed products each."""
    from demo_shop.catalog.models import Category

    shoes = Category.objects.create(name="Shoes", slug="shoes")
    synthetic_products(category, 50, seed=1)
    synthetic_products(shoes, 50, seed=2)
    return category, shoes


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


def synthetic_products(
    category: Any, count: int, *, dims: int = 512, seed: int = 0, rare_every: int = 0
) -> list[Any]:
    """
    ``count`` products with clustered random unit vectors written straight to
    the rows (as if indexed by the current model), for search tests at scale.
    Every ``rare_every``-th product gets colour "rare".
    """
    import numpy as np

    from demo_shop.catalog.models import Product
    from shop_search.testing import store_vectors

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dims))
    vectors = centres[rng.integers(0, 20, size=count)] + 0.5 * rng.normal(
        size=(count, dims)
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    name = "products/synthetic.png"
    products = [
        Product(
            sku=f"S-{seed}-{i}",
            name=f"Synthetic {i}",
            price=i % 100 + 1,
            category=category,
            colour="rare" if rare_every and i % rare_every == 0 else "common",
            image=name,
        )
        for i in range(count)
    ]
    products = Product.objects.bulk_create(products, batch_size=1000)
    store_vectors(products, vectors)
    return products


def products_with_vectors() -> int:
    """How many products have at least one image vector stored."""
    from shop_search.models import ImageVector

    return ImageVector.objects.values("object_pk").distinct().count()
