"""
The fast paths of bulk indexing keep what a shop sees: decoding, encoding
and writing overlap in threads, a batch is written in a few statements, and
product words are encoded all at once, sorted by length.
"""

from __future__ import annotations

import numpy as np
import pytest

from shop_search.encoders import get_text_encoder
from shop_search.indexing import index_documents, index_objects
from shop_search.models import ImageVector, IndexEntry, SearchDocument
from shop_search.signal_handlers import indexing_paused

from .conftest import png_bytes


def _vector(product):
    row = ImageVector.objects.get(object_pk=str(product.pk), source="image")
    return np.asarray(row.vector, dtype=np.float32)


def test_batches_in_flight_give_each_product_its_own_vector_or_failure(
    make_product,
):
    colours = ["red", "blue", "green", "yellow", "purple", "orange", "black"]
    with indexing_paused():
        products = [make_product(colour=c) for c in colours]
        broken = make_product(image=b"not an image")
        products.insert(3, broken)
    pks = [p.pk for p in products]

    result = index_objects(type(broken), pks, batch_size=2, documents=False)

    assert (result.encoded, result.failed) == (len(colours), 1)
    assert sorted(result.encoded_pks) == sorted(p.pk for p in products if p != broken)
    entry = IndexEntry.objects.get(object_pk=str(broken.pk))
    assert entry.error.startswith("image_") and entry.attempts == 1
    # Each vector is its own image's, whichever batch it travelled in.
    from shop_search.encoders import get_image_encoder
    from shop_search.images import load_image

    encoder = get_image_encoder()
    for product, colour in zip(
        [p for p in products if p != broken], colours, strict=True
    ):
        expected = encoder.encode_images([load_image(png_bytes(colour))])[0]
        assert float(_vector(product) @ expected) > 0.999


def test_a_second_run_after_a_batch_write_changes_nothing(make_product):
    with indexing_paused():
        products = [make_product(colour=c) for c in ("red", "blue", "green")]
    pks = [p.pk for p in products]
    index_objects(type(products[0]), pks, batch_size=2, documents=False)
    again = index_objects(type(products[0]), pks, batch_size=2, documents=False)
    assert (again.encoded, again.skipped, again.failed) == (0, 3, 0)


def test_a_removed_gallery_image_loses_its_vector_in_a_batch_write(make_product):
    from django.core.files.base import ContentFile

    from demo_shop.catalog.models import ProductImage

    with indexing_paused():
        product = make_product(colour="red")
        extra = ProductImage(product=product)
        extra.image.save("extra.png", ContentFile(png_bytes("blue")), save=False)
        extra.save()
    model = type(product)
    index_objects(model, [product.pk], documents=False)
    assert ImageVector.objects.filter(object_pk=str(product.pk)).count() == 2

    with indexing_paused():
        extra.delete()
    result = index_objects(model, [product.pk], documents=False)

    assert result.encoded == 1  # a changed product, though nothing to encode
    sources = ImageVector.objects.filter(object_pk=str(product.pk))
    assert list(sources.values_list("source", flat=True)) == ["image"]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_each_product_gets_the_vector_of_its_own_names(
    make_product, settings, batch_size
):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "BATCH_SIZE": batch_size}
    names = [
        "Kleid",
        "A long summer dress with red flowers and a belt",
        "红色连衣裙",
        "Kleid",  # two products, one name
        "shoe",
        "Blue suede shoes for dancing all night long",
        "стул",
    ]
    with indexing_paused():
        products = [make_product(name=name) for name in names]
    model = type(products[0])

    index_documents(model, [p.pk for p in products], force=True)

    titles = [
        SearchDocument.objects.get(object_pk=str(p.pk)).names.replace("\n", " / ")
        for p in products
    ]
    alone = np.stack([get_text_encoder().encode_texts([t])[0] for t in titles])
    for product, title, own in zip(products, titles, alone, strict=True):
        stored = SearchDocument.objects.get(object_pk=str(product.pk)).vector
        similarity = alone @ np.asarray(stored, dtype=np.float32)
        assert float(own @ np.asarray(stored, dtype=np.float32)) > 0.999
        # No other title's vector is as close: the vector is this product's.
        others = [s for s, t in zip(similarity, titles, strict=True) if t != title]
        assert max(others) < similarity.max()
