"""Encoding on save: what a shop developer sees after saving products."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import transaction

from demo_shop.catalog.models import Product
from shop_search.models import IndexStatus
from shop_search.signal_handlers import indexing_paused
from shop_search.testing import index_view

from .conftest import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def test_created_product_gets_a_unit_vector_of_the_field_dimension(make_product):
    product = make_product()
    product.refresh_from_db()
    vector = index_view(product).vector
    assert vector is not None
    assert vector.shape == (512,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-3)  # halfvec precision
    assert index_view(product).status == IndexStatus.INDEXED
    assert index_view(product).image_model.endswith("tiny-clip")


def test_changing_the_name_alone_does_not_re_encode(make_product, encode_spy):
    product = make_product()
    assert sum(encode_spy) == 1
    product.name = "Renamed"
    product.save()
    product.description = "New text"
    product.save()
    assert sum(encode_spy) == 1
    product.refresh_from_db()
    assert index_view(product).status == IndexStatus.INDEXED


def test_saving_a_stale_in_memory_object_keeps_the_stored_vector(make_product):
    product = make_product()  # indexed after commit; this object never saw the vector
    stored = index_view(Product.objects.get(pk=product.pk)).vector
    product.name = "Renamed"
    product.save()
    again = Product.objects.get(pk=product.pk)
    assert again.name == "Renamed"
    np.testing.assert_array_equal(index_view(again).vector, stored)


def test_changing_the_image_re_encodes(make_product, encode_spy):
    product = make_product(colour="red")
    before = index_view(Product.objects.get(pk=product.pk)).vector
    product.image.save("blue.png", ContentFile(png_bytes("blue")), save=False)
    product.save()
    assert sum(encode_spy) == 2
    after = Product.objects.get(pk=product.pk)
    assert index_view(after).status == IndexStatus.INDEXED
    assert not np.allclose(index_view(after).vector, before)


def test_a_rolled_back_save_encodes_nothing(make_product, encode_spy):
    with pytest.raises(RuntimeError), transaction.atomic():
        make_product()
        raise RuntimeError("rollback")
    assert encode_spy == []
    assert not Product.objects.exists()


def test_unreadable_image_is_saved_and_marked_failed(make_product):
    product = make_product(image=b"GIF89a this is not really an image")
    stored = Product.objects.get(pk=product.pk)
    assert stored.name == product.name  # the save itself succeeded
    assert index_view(stored).vector is None
    assert index_view(stored).status == IndexStatus.FAILED
    assert index_view(stored).attempts == 1
    assert index_view(stored).error.startswith("image_")


def test_failed_product_is_retried_by_reindex_then_set_aside(make_product, settings):
    product = make_product(image=b"\x89PNG\r\n\x1a\n truncated")
    for attempt in (2, 3):
        call_command("shop_search_reindex", verbosity=0)
        assert index_view(Product.objects.get(pk=product.pk)).attempts == attempt
    stored = Product.objects.get(pk=product.pk)
    assert index_view(stored).status == IndexStatus.GIVEN_UP
    call_command("shop_search_reindex", verbosity=0)  # not retried forever
    assert index_view(Product.objects.get(pk=product.pk)).attempts == 3


def test_a_new_image_that_fails_takes_the_old_ones_vector_away(make_product):
    """Found by an attack on the admin: the old photo's vector stayed, so a
    photo search found the product by a picture it no longer shows."""
    product = make_product(colour="blue")
    old = index_view(Product.objects.get(pk=product.pk)).vector
    assert old is not None
    product = Product.objects.get(pk=product.pk)
    product.image.save("new.png", ContentFile(b"\x89PNG\r\n\x1a\n cut"), save=False)
    product.save()
    stored = Product.objects.get(pk=product.pk)
    assert index_view(stored).status == IndexStatus.FAILED
    assert index_view(stored).vector is None


def test_one_transaction_is_one_indexing_attempt(make_product):
    """Found by an attack on the admin: a save with gallery rows sent one
    signal per row, and each indexed the product again, so one save with a
    broken photo counted several failed attempts (and could be set aside
    before any retry)."""
    from demo_shop.catalog.models import ProductImage

    with transaction.atomic():
        product = make_product(image=b"\x89PNG\r\n\x1a\n cut")
        for position in range(3):
            photo = ProductImage(product=product, position=position)
            photo.image.save(f"g{position}.png", ContentFile(png_bytes()), save=False)
            photo.save()
    stored = index_view(Product.objects.get(pk=product.pk))
    assert stored.status == IndexStatus.FAILED and stored.attempts == 1


def test_a_rolled_back_savepoint_leaves_the_rest_of_the_transaction_indexed(
    make_product,
):
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint
                make_product(colour="red")
                raise RuntimeError
        except RuntimeError:
            pass
        kept = make_product(colour="green")
    # The savepoint took its own product's callback away, not this one's.
    assert index_view(Product.objects.get(pk=kept.pk)).status == IndexStatus.INDEXED


def test_a_delete_rolled_back_leaves_the_product_searchable(make_product):
    """Found in review: the key of a rolled-back delete stayed in the
    connection's clean-up batch, and the next committed delete forgot it."""
    kept, gone = make_product(colour="red"), make_product(colour="blue")
    try:
        with transaction.atomic():
            Product.objects.filter(pk=kept.pk).delete()
            raise RuntimeError  # rolled back
    except RuntimeError:
        pass
    Product.objects.filter(pk=gone.pk).delete()
    assert index_view(Product.objects.get(pk=kept.pk)).status == IndexStatus.INDEXED


def test_a_new_image_gives_a_failed_product_a_fresh_start(make_product):
    product = make_product(image=b"not an image at all")
    product = Product.objects.get(pk=product.pk)
    product.image.save("good.png", ContentFile(png_bytes("green")), save=False)
    product.save()
    stored = Product.objects.get(pk=product.pk)
    assert index_view(stored).status == IndexStatus.INDEXED
    assert index_view(stored).error == "" and index_view(stored).attempts == 0


def test_removing_the_image_clears_the_vector(make_product):
    product = make_product()
    product = Product.objects.get(pk=product.pk)
    product.image = ""
    product.save()
    stored = Product.objects.get(pk=product.pk)
    assert index_view(stored).vector is None
    assert index_view(stored).status == IndexStatus.NO_IMAGE


def test_queryset_update_of_images_is_caught_by_reindex_stale(make_product, encode_spy):
    from django.core.files.storage import default_storage

    red, blue = make_product(colour="red"), make_product(colour="blue")
    other = make_product(colour="green")
    Product.objects.filter(pk=red.pk).update(image=blue.image.name)
    assert index_view(Product.objects.get(pk=red.pk)).status == IndexStatus.STALE
    encode_spy.clear()
    call_command("shop_search_reindex", "--stale", verbosity=0)
    # The same file is embedded already (blue's): its vector is copied.
    assert sum(encode_spy) == 0
    red = Product.objects.get(pk=red.pk)
    assert index_view(red).status == IndexStatus.INDEXED
    np.testing.assert_array_equal(
        index_view(red).vector, index_view(Product.objects.get(pk=blue.pk)).vector
    )
    # A new file behind Django's back is encoded, and nothing else.
    name = default_storage.save("products/new.png", ContentFile(png_bytes("yellow")))
    Product.objects.filter(pk=red.pk).update(image=name)
    encode_spy.clear()
    call_command("shop_search_reindex", "--stale", verbosity=0)
    assert sum(encode_spy) == 1
    assert index_view(Product.objects.get(pk=red.pk)).status == IndexStatus.INDEXED
    assert index_view(Product.objects.get(pk=other.pk)).status == IndexStatus.INDEXED


def test_bulk_created_products_are_found_missing_and_indexed(category):
    from django.core.files.storage import default_storage

    name = default_storage.save("products/bulk.png", ContentFile(png_bytes("red")))
    Product.objects.bulk_create(
        Product(sku=f"B{i}", name=f"Bulk {i}", price=1, category=category, image=name)
        for i in range(5)
    )
    statuses = {index_view(p).status for p in Product.objects.all()}
    assert statuses == {IndexStatus.MISSING}
    call_command("shop_search_reindex", verbosity=0)
    assert {index_view(p).status for p in Product.objects.all()} == {
        IndexStatus.INDEXED
    }


def test_fixture_loads_are_not_indexed(make_product, tmp_path, encode_spy):
    product = make_product()
    call_command("dumpdata", "catalog", output=str(tmp_path / "f.json"), verbosity=0)
    Product.objects.all().delete()
    encode_spy.clear()
    call_command("loaddata", str(tmp_path / "f.json"), verbosity=0)
    assert encode_spy == []
    # The index lives in shop_search's tables: the loaded product waits for
    # the re-index (or a fixture of shop_search's tables too).
    assert index_view(Product.objects.get(pk=product.pk)).status == IndexStatus.MISSING
    call_command("shop_search_reindex", verbosity=0)
    assert index_view(Product.objects.get(pk=product.pk)).vector is not None


def test_indexing_paused_leaves_products_for_reindex(make_product, encode_spy):
    with indexing_paused():
        products = [make_product() for _ in range(3)]
    assert encode_spy == []
    call_command("shop_search_reindex", verbosity=0)
    assert encode_spy == [3]  # one batch, one forward pass
    assert all(
        index_view(Product.objects.get(pk=p.pk)).status == IndexStatus.INDEXED
        for p in products
    )


def test_save_succeeds_when_the_model_cannot_be_loaded(make_product, settings, caplog):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "IMAGE_MODEL": "/nonexistent/shop-search-model",
    }
    product = make_product()
    stored = Product.objects.get(pk=product.pk)
    assert index_view(stored).status == IndexStatus.MISSING  # not blamed on the product
    assert "run shop_search_reindex later" in caplog.text


def _thread(target):
    """A thread running ``target`` that gives its pooled connection back and
    keeps any exception for the test to raise (``.error``)."""
    import threading

    from django.db import connection

    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 (re-raised by the test)
            worker.error = exc
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.error = None
    worker.start()
    return worker


def _joined(*workers):
    for worker in workers:
        worker.join(10)
        assert not worker.is_alive()
        if worker.error is not None:
            raise worker.error


def test_a_product_deleted_while_a_batch_writes_leaves_nothing_behind(
    make_product, monkeypatch
):
    """Found by an attack on the admin: a batch that had read a product
    wrote its vectors and index entry after the product's delete had
    removed them, and they stayed until the next full re-index."""
    import threading

    from shop_search import indexing
    from shop_search.indexing import index_objects
    from shop_search.models import ImageVector, IndexEntry

    product = make_product()
    key = str(product.pk)
    writing, go_on = threading.Event(), threading.Event()
    write = indexing._write

    def slow_write(*args, **kwargs):
        writing.set()  # checked, under the product's lock
        go_on.wait(10)
        return write(*args, **kwargs)

    monkeypatch.setattr(indexing, "_write", slow_write)
    batch = _thread(lambda: index_objects(Product, [product.pk], force=True))
    assert writing.wait(10)
    deleting = _thread(lambda: Product.objects.filter(pk=product.pk).delete())
    # The delete commits, then its clean-up waits for the batch's lock.
    assert _waits_for_a_lock(deleting)
    go_on.set()
    _joined(batch, deleting)
    assert not Product.objects.filter(pk=product.pk).exists()
    assert not ImageVector.objects.filter(object_pk=key).exists()
    assert not IndexEntry.objects.filter(object_pk=key).exists()


def test_a_gallery_photo_removed_while_a_batch_writes_loses_its_vector(
    make_product, monkeypatch
):
    """The same race for a gallery photo: the removal's own indexing waits
    for the batch's lock, then takes the photo's vector away."""
    import threading

    from demo_shop.catalog.models import ProductImage
    from shop_search import indexing
    from shop_search.indexing import index_objects
    from shop_search.models import ImageVector

    product = make_product()
    photo = ProductImage(product=product, position=1)
    photo.image.save("g.png", ContentFile(png_bytes("green")), save=False)
    photo.save()
    source = f"gallery__image:{photo.pk}"
    assert ImageVector.objects.filter(source=source).exists()
    writing, go_on = threading.Event(), threading.Event()
    write = indexing._write

    def slow_write(*args, **kwargs):
        if threading.current_thread() is batch:  # not the removal's own run
            writing.set()
            go_on.wait(10)
        return write(*args, **kwargs)

    monkeypatch.setattr(indexing, "_write", slow_write)
    batch = _thread(lambda: index_objects(Product, [product.pk], force=True))
    assert writing.wait(10)
    removing = _thread(photo.delete)
    assert _waits_for_a_lock(removing)  # deleted; its indexing waits
    go_on.set()
    _joined(batch, removing)
    assert not ImageVector.objects.filter(source=source).exists()
    assert index_view(Product.objects.get(pk=product.pk)).status == IndexStatus.INDEXED


def _waits_for_a_lock(worker, timeout=10.0):
    """Whether some session waits for an advisory lock while ``worker`` runs
    (the race each test sets up), within ``timeout`` seconds."""
    import time

    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.is_alive():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND NOT granted"
            )
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.02)
    return False
