"""The demo project: catalog generation, the demo command and catalog import;
on the loaded demo, gallery photos find their product and unpublished
products never reach a shopper."""

from __future__ import annotations

import csv
import json
from io import StringIO
from itertools import islice

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from demo_shop.catalog.demo_data import generate_catalog
from demo_shop.catalog.models import Category, Product, ProductImage
from shop_search.models import (
    ImageVector,
    IndexEntry,
    IndexState,
    IndexStatus,
    SearchDocument,
)
from shop_search.testing import index_view

from .conftest import QUERIES, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def generated():
    """The generated demo catalog (drawn once: a few seconds)."""
    return list(generate_catalog())


def test_generated_catalog_is_large_varied_and_multilingual(generated):
    items = generated
    assert len(items) >= 200
    assert len({item["category"]["name"] for item in items}) >= 12
    names = items[0]["product"]["name_translations"]
    assert {"en", "de", "fr", "es", "zh"} <= set(names)
    assert len({item["image"] for item in items}) == len(items)  # all drawn differently


def test_generated_galleries_and_unpublished_products(generated):
    items = generated
    with_gallery = [item for item in items if item["gallery"]]
    assert len(with_gallery) >= 20
    assert len({item["category"]["name"] for item in with_gallery}) >= 12
    assert {len(item["gallery"]) for item in with_gallery} == {2, 3, 4}
    photos = [photo for item in items for photo in [item["image"], *item["gallery"]]]
    assert len(set(photos)) == len(photos)  # every gallery photo differs
    hidden = [item for item in items if not item["published"]]
    assert len(hidden) == 10
    assert len({item["category"]["name"] for item in hidden}) == 10
    assert any(item["gallery"] for item in hidden)
    # The same seed, the same catalog, galleries included (the first
    # category's 16 products, two with a gallery, one unpublished).
    again = list(islice(generate_catalog(), 16))
    assert again == items[:16]


def test_demo_command_loads_and_indexes_every_product(client):
    out = StringIO()
    call_command("demo", "--no-serve", stdout=out)
    assert Product.objects.count() >= 200
    assert Category.objects.count() >= 12
    assert {index_view(p).status for p in Product.objects.all()} == {
        IndexStatus.INDEXED
    }
    assert "encoded" in out.getvalue()
    # run again: nothing is loaded or encoded twice
    out = StringIO()
    call_command("demo", "--no-serve", stdout=out)
    assert "Catalog already loaded" in out.getvalue()
    assert "0 pending" in out.getvalue()
    page = client.get("/")
    assert page.status_code == 200
    assert f"{Product.objects.filter(is_published=True).count()} products" in (
        page.content.decode()
    )


def test_the_demo_answers_every_kind_of_search(client):
    call_command("demo", "--no-serve", stdout=StringIO())
    for query in QUERIES:
        api = client.get("/api/search/", {"q": query, "limit": 5})
        assert api.status_code == 200 and len(api.json()["results"]) == 5
        page = client.get("/search/", {"q": query})
        assert page.status_code == 200 and page.content.count(b'class="ss-card"') == 24
    product = Product.objects.order_by("pk").first()
    data = product.image.read()
    for group in ("none", "look"):
        photo = SimpleUploadedFile("p.png", data, "image/png")
        response = client.post("/api/search/image/", {"image": photo, "group": group})
        assert response.status_code == 200
    photo = SimpleUploadedFile("p.png", data, "image/png")
    assert client.post("/search/", {"image": photo, "look": "on"}).status_code == 200
    similar = client.get(f"/api/products/{product.pk}/similar/")
    assert similar.status_code == 200 and similar.json()["results"]
    suggest = client.post(
        "/api/categories/suggest/",
        {"text": "Stuhl", "top": 100},
        content_type="application/json",
    )
    assert len(suggest.json()["categories"]) == Category.objects.count()


def test_the_demo_builds_no_links_on_a_hostile_host(client, demo_catalog):
    """Result links and image URLs come from the request's Host: the demo
    answers only its local names unless DJANGO_ALLOWED_HOSTS names others."""
    local = client.get("/api/search/", {"q": "dress"}, HTTP_HOST="localhost")
    assert local.status_code == 200
    hostile = client.get("/api/search/", {"q": "dress"}, HTTP_HOST="evil.example")
    assert hostile.status_code == 400
    assert b"evil.example/" not in hostile.content


def test_import_catalog_from_csv_and_jsonl(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes("red"))
    (tmp_path / "img" / "b.png").write_bytes(png_bytes("blue"))
    with (tmp_path / "cat.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh,
            [
                "sku",
                "name",
                "name_de",
                "price",
                "category",
                "category_de",
                "image",
                "in_stock",
            ],
        )
        writer.writeheader()
        writer.writerow(
            {
                "sku": "A",
                "name": "Red bag",
                "name_de": "Rote Tasche",
                "price": "19.90",
                "category": "Bags",
                "category_de": "Taschen",
                "image": "img/a.png",
                "in_stock": "yes",
            }
        )
    call_command("import_catalog", str(tmp_path / "cat.csv"), verbosity=0)
    (tmp_path / "cat.jsonl").write_text(
        json.dumps(
            {
                "sku": "B",
                "name": "Blue bag",
                "price": 25,
                "category": "Bags",
                "image": str(tmp_path / "img" / "b.png"),
                "in_stock": False,
            }
        )
        + "\n"
    )
    call_command("import_catalog", str(tmp_path / "cat.jsonl"), verbosity=0)
    a, b = Product.objects.get(sku="A"), Product.objects.get(sku="B")
    assert a.name_translations == {"de": "Rote Tasche"}
    assert a.category.translations == {"de": "Taschen"}
    assert b.in_stock is False
    assert index_view(a).status == index_view(b).status == IndexStatus.INDEXED


def test_loading_again_rewrites_only_the_gallery_photos_that_changed():
    from demo_shop.catalog.loading import load_items

    item = {
        "category": {"name": "Bags"},
        "product": {"sku": "G", "name": "Green bag", "price": "9.50"},
        "image": png_bytes("green"),
        "gallery": [png_bytes("red"), png_bytes("blue"), png_bytes("black")],
        "published": False,
    }
    load_items([item])
    product = Product.objects.get(sku="G")
    assert product.is_published is False
    first = list(product.gallery.values_list("position", "image"))
    assert [position for position, _name in first] == [0, 1, 2]
    # One photo replaced, one dropped; "published" left out keeps the flag.
    load_items([{**item, "gallery": [png_bytes("red"), png_bytes("white")]}])
    del item["published"]
    load_items([{**item, "gallery": [png_bytes("red"), png_bytes("white")]}])
    again = list(product.gallery.values_list("position", "image"))
    assert again[0] == first[0] and again[1] != first[1] and len(again) == 2
    product.refresh_from_db()
    assert product.is_published is False


def test_import_catalog_names_the_bad_line(tmp_path):
    (tmp_path / "bad.csv").write_text("sku,name,price,category\nX,,3,Bags\n")
    with pytest.raises(CommandError, match="line 2: missing name"):
        call_command("import_catalog", str(tmp_path / "bad.csv"))
    assert not Product.objects.exists()


# --- on the loaded demo: galleries and visibility ------------------------------


@pytest.fixture(scope="module")
def demo_catalog(django_db_setup, django_db_blocker):
    """The demo, loaded and indexed once for the tests below (which run in
    transactions rolled back, so they share it)."""
    with django_db_blocker.unblock():
        call_command("demo", "--no-serve", stdout=StringIO())
        yield
        # Committed outside the tests' transactions: leave nothing behind.
        Product.objects.all().delete()
        Category.objects.all().delete()
        for model in (SearchDocument, IndexState, ImageVector, IndexEntry):
            model.objects.all().delete()


def _photo(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", data, "image/png")


def _read(file) -> bytes:
    with file.open("rb") as fh:
        return fh.read()


def _image_search_ids(client, data: bytes, **params) -> list:
    response = client.post("/api/search/image/", {"image": _photo(data), **params})
    assert response.status_code == 200, response.content
    return [hit["product"]["id"] for hit in response.json()["results"]]


def _every_id(client, url: str, **params) -> list:
    """The ids of every result page of a GET search."""
    ids, offset = [], 0
    while offset is not None:
        body = client.get(url, {**params, "limit": 100, "offset": offset}).json()
        ids += [hit["product"]["id"] for hit in body["results"]]
        offset = body["next_offset"]
    return ids


@pytest.mark.django_db
def test_a_gallery_photo_finds_its_product_first(client, demo_catalog):
    photos = ProductImage.objects.filter(product__is_published=True)
    assert photos.values("product").distinct().count() >= 20
    for photo in photos.select_related("product"):
        ids = _image_search_ids(client, _read(photo.image), limit=5)
        assert ids[0] == photo.product.pk, str(photo)


@pytest.mark.django_db
def test_unpublished_products_never_come_back(client, demo_catalog):
    hidden = list(Product.objects.filter(is_published=False))
    assert len(hidden) == 10
    hidden_ids = {p.pk for p in hidden}
    shown = Product.objects.filter(is_published=True).order_by("pk").first()

    # Every page of a text search that ranks the whole catalog.
    everything = _every_id(client, "/api/search/", q="a photo of the product")
    assert len(everything) == 230
    assert not hidden_ids & set(everything)

    for product in hidden:
        url = product.get_absolute_url()
        # Its exact name, its SKU (which rank a published product first).
        for query in (product.name, product.sku):
            body = client.get("/api/search/", {"q": query, "limit": 10}).json()
            assert not hidden_ids & {hit["product"]["id"] for hit in body["results"]}
        # Its own photos, alone and in shop the look.
        for data in [_read(product.image), *map(_read, _gallery(product))]:
            assert not hidden_ids & set(_image_search_ids(client, data, limit=100))
            look = client.post(
                "/api/search/image/", {"image": _photo(data), "group": "look"}
            ).json()
            hits = [
                *look["whole_image"]["results"],
                *(hit for item in look["items"] for hit in item["results"]),
            ]
            assert not hidden_ids & {hit["product"]["id"] for hit in hits}
        # Autocomplete never offers its name.
        suggest = client.get("/api/suggest/", {"q": product.name, "limit": 10})
        assert product.name not in [s["text"] for s in suggest.json()["products"]]
        # similar/ answers for it as for a product that does not exist.
        similar = client.get(f"/api/products/{product.pk}/similar/")
        missing = client.get("/api/products/99999999/similar/")
        assert similar.status_code == missing.status_code == 404
        assert similar.json() == missing.json()
        # The page, by words and by its photo.
        page = client.get("/search/", {"q": product.name})
        assert page.status_code == 200 and f'href="{url}"' not in page.content.decode()
        page = client.post("/search/", {"image": _photo(_read(product.image))})
        assert page.status_code == 200 and f'href="{url}"' not in page.content.decode()
        # The demo's own catalog pages.
        assert client.get(url).status_code == 404

    # Controls: what is published is found the same ways.
    assert _image_search_ids(client, _read(shown.image), limit=5)[0] == shown.pk
    assert client.get(f"/api/products/{shown.pk}/similar/").status_code == 200
    similar = _every_id(client, f"/api/products/{shown.pk}/similar/")
    assert similar and not hidden_ids & set(similar)
    page = client.get("/search/", {"q": shown.name})
    assert f'href="{shown.get_absolute_url()}"' in page.content.decode()
    suggest = client.get("/api/suggest/", {"q": shown.name, "limit": 10})
    assert shown.name in [s["text"] for s in suggest.json()["products"]]
    assert client.get(shown.get_absolute_url()).status_code == 200

    listed = "".join(
        client.get("/", {"page": number}).content.decode() for number in (1, 2, 3, 4, 5)
    )
    assert f'href="{shown.get_absolute_url()}"' in listed
    for product in hidden:
        assert f'href="{product.get_absolute_url()}"' not in listed


@pytest.mark.django_db
def test_the_admin_shows_galleries_and_publication(admin_client, demo_catalog):
    hidden = admin_client.get("/admin/catalog/product/", {"is_published__exact": "0"})
    assert hidden.status_code == 200
    assert "10 products" in hidden.content.decode()
    product = Product.objects.filter(gallery__isnull=False).first()
    page = admin_client.get(f"/admin/catalog/product/{product.pk}/change/")
    assert page.status_code == 200
    total = product.gallery.count()
    assert f'name="gallery-TOTAL_FORMS" value="{total}"' in page.content.decode()


@pytest.mark.django_db
def test_paging_through_a_search_shows_each_product_once(client, demo_catalog):
    for query in ("red dress", "striped", "DEMO"):
        ids = _every_id(client, "/api/search/", q=query)
        assert len(ids) == len(set(ids)) == 230, query


def _gallery(product):
    return [photo.image for photo in product.gallery.all()]
