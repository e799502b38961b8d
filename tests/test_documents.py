"""A product's words: folded, written on save, found again after bulk edits."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from demo_shop.catalog.models import Product
from shop_search.documents import build, fold, tokens
from shop_search.indexing import index_documents
from shop_search.models import SearchDocument

pytestmark = pytest.mark.django_db


def test_folding_meets_accents_case_and_sharp_s():
    assert fold("Größe À POIS Œuvre") == "grosse a pois oeuvre"
    assert tokens("T-shirt noir, à carreaux!") == ["t-shirt", "noir", "a", "carreaux"]


def test_a_document_holds_every_language_and_the_identifiers(make_product):
    product = make_product(
        name="Red dress",
        name_translations={"de": "Rotes Kleid", "fr": "Robe rouge"},
        description="Cotton, knee length",
        save=False,
    )
    product.sku = "SKU-77a"
    document = build(product)
    assert document.title == "Red dress"
    assert document.names.split("\n") == ["red dress", "rotes kleid", "robe rouge"]
    assert document.body == "cotton, knee length"
    assert document.identifiers == ["SKU-77A"]


def _words(product):
    return SearchDocument.objects.get(object_pk=str(product.pk)).names


def test_a_save_rewrites_the_words_and_a_delete_removes_them(
    make_product, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        product = make_product(name="Blue mug")
    assert _words(product) == "blue mug"
    with django_capture_on_commit_callbacks(execute=True):
        product.name = "Blue teapot"
        product.save()
    assert _words(product) == "blue teapot"
    key = str(product.pk)
    product.delete()
    assert not SearchDocument.objects.filter(object_pk=key).exists()


def test_reindex_finds_bulk_edits_and_rows_deleted_behind_djangos_back(
    make_product, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        kept = make_product(name="Green lamp")
        gone = make_product(name="Grey lamp")
    Product.objects.filter(pk=kept.pk).update(name="Green floor lamp")
    from django.db import connection

    with connection.cursor() as cursor:  # no signal: the word row stays
        cursor.execute("DELETE FROM catalog_product WHERE id = %s", [gone.pk])
    out = StringIO()
    call_command("shop_search_reindex", stdout=out)
    assert _words(kept) == "green floor lamp"
    assert not SearchDocument.objects.filter(object_pk=str(gone.pk)).exists()
    assert "words of 1 product(s) written" in out.getvalue()
    assert "1 removed" in out.getvalue()
    # Nothing changed since: a second run writes nothing.
    assert index_documents(Product).written == 0
