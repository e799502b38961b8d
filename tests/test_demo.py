"""The demo project: catalog generation, the demo command and catalog import."""

from __future__ import annotations

import csv
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from demo_shop.catalog.demo_data import generate_catalog
from demo_shop.catalog.models import Category, Product
from shop_search.models import IndexStatus

from .conftest import QUERIES, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def test_generated_catalog_is_large_varied_and_multilingual():
    items = list(generate_catalog())
    assert len(items) >= 200
    assert len({item["category"]["name"] for item in items}) >= 12
    names = items[0]["product"]["name_translations"]
    assert {"en", "de", "fr", "es", "zh"} <= set(names)
    assert len({item["image"] for item in items}) == len(items)  # all drawn differently


def test_demo_command_loads_and_indexes_every_product(client):
    out = StringIO()
    call_command("demo", "--no-serve", stdout=out)
    assert Product.objects.count() >= 200
    assert Category.objects.count() >= 12
    assert {p.search_status for p in Product.objects.all()} == {IndexStatus.INDEXED}
    assert "encoded" in out.getvalue()
    # run again: nothing is loaded or encoded twice
    out = StringIO()
    call_command("demo", "--no-serve", stdout=out)
    assert "Catalog already loaded" in out.getvalue()
    assert "0 pending" in out.getvalue()
    page = client.get("/")
    assert page.status_code == 200 and b"products" in page.content


def test_the_demo_answers_every_kind_of_search(client):
    from django.core.files.uploadedfile import SimpleUploadedFile

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
    assert a.search_status == b.search_status == IndexStatus.INDEXED


def test_import_catalog_names_the_bad_line(tmp_path):
    (tmp_path / "bad.csv").write_text("sku,name,price,category\nX,,3,Bags\n")
    with pytest.raises(CommandError, match="line 2: missing name"):
        call_command("import_catalog", str(tmp_path / "bad.csv"))
    assert not Product.objects.exists()
