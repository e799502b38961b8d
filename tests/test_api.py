"""The storefront search API, as a frontend calls it."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.core.management import call_command

from demo_shop.catalog.models import Product

from .conftest import QUERIES, png_bytes

pytestmark = pytest.mark.django_db


def _upload(data, name="photo.png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/png")


@pytest.mark.parametrize(
    "query",
    QUERIES,
)
def test_text_search_in_six_languages(client, catalog, query):
    body = client.get("/api/search/", {"q": query, "limit": 5}).json()
    assert len(body["results"]) == 5
    assert body["next_offset"] == 5
    first = body["results"][0]
    assert set(first) == {"score", "matched", "product"}
    assert isinstance(body["count"], int) and body["no_match"] is False
    assert {"name", "price", "currency", "image", "url"} <= set(first["product"])
    assert 1 <= len(body["categories"]) <= 3


def test_filters_and_pages(client, catalog):
    _dresses, shoes = catalog
    body = client.get(
        "/api/search/",
        {"q": "shoe", "category": shoes.pk, "limit": 30, "max_price": "20"},
    ).json()
    names = [r["product"]["category"] for r in body["results"]]
    assert names and set(names) == {"Shoes"}
    assert all(float(r["product"]["price"]) <= 20 for r in body["results"])
    first = client.get("/api/search/", {"q": "shoe", "limit": 10}).json()
    second = client.get("/api/search/", {"q": "shoe", "limit": 10, "offset": 10}).json()
    ids = [r["product"]["id"] for r in first["results"] + second["results"]]
    assert len(set(ids)) == 20


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": ""}, "q"),
        ({}, "q"),
        ({"q": "x", "limit": "0"}, "limit"),
        ({"q": "x", "limit": "1000"}, "limit"),
        ({"q": "x", "offset": "-1"}, "offset"),
        ({"q": "x", "limit": "ten"}, "limit"),
        ({"q": "x", "max_price": "cheap"}, "max_price"),
        ({"q": "x", "category": "shoes"}, "category"),
        ({"q": "x", "in_stock": "maybe"}, "in_stock"),
    ],
)
def test_invalid_parameters_are_400_with_a_json_body(client, catalog, params, field):
    response = client.get("/api/search/", params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] in ("invalid_parameters", "invalid_filter")
    assert field in body["errors"] and field in body["message"]


def test_control_characters_only_query_is_400(client, catalog):
    body = client.get("/api/search/", {"q": "\x01\x02"}).json()
    assert body == {"code": "query_empty", "message": "The query is empty."}


def test_image_search_and_shop_the_look(
    client, catalog, settings, make_product, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        product = make_product(colour="blue")
    data = png_bytes("blue")
    body = client.post(
        "/api/search/image/", {"image": _upload(data), "limit": 3}
    ).json()
    assert body["results"][0]["product"]["id"] == product.pk
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "DETECTION_MIN_SCORE": 0.0}
    outfit = png_bytes("green", (400, 300))
    look = client.post(
        "/api/search/image/", {"image": _upload(outfit), "group": "look", "limit": 2}
    ).json()
    assert look["image_size"] == [400, 300]
    assert look["items"] and look["whole_image"]["results"]
    for item in look["items"]:
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
        assert item["label"] and 0 <= item["score"] <= 1
        assert len(item["results"]) == 2


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "image_empty"),
        (b"<html><body>hi</body></html>", 400, "image_unsupported_format"),
        (png_bytes("red")[:50], 400, "image_corrupt"),
    ],
)
def test_bad_uploads_are_refused_with_json(client, catalog, data, status, code):
    response = client.post("/api/search/image/", {"image": _upload(data)})
    assert response.status_code == status
    assert response.json()["code"] == code


def test_wrong_content_type_is_415(client, catalog):
    response = client.post("/api/search/image/", "{}", content_type="application/json")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_similar_products(client, catalog):
    product = Product.objects.first()
    body = client.get(f"/api/products/{product.pk}/similar/", {"limit": 5}).json()
    ids = [r["product"]["id"] for r in body["results"]]
    assert len(ids) == 5 and product.pk not in ids
    assert client.get("/api/products/0/similar/").json()["code"] == "not_found"


def test_category_suggestions_for_text_and_image(client, catalog):
    body = client.post(
        "/api/categories/suggest/",
        {"text": "Schuhe", "top": 10},
        content_type="application/json",
    ).json()
    assert {c["name"] for c in body["categories"]} == {"Dresses", "Shoes"}
    assert sum(c["probability"] for c in body["categories"]) == pytest.approx(
        1, abs=1e-4
    )
    body = client.post(
        "/api/categories/suggest/", {"image": _upload(png_bytes())}
    ).json()
    assert len(body["categories"]) == 2
    response = client.post(
        "/api/categories/suggest/", {}, content_type="application/json"
    )
    assert response.status_code == 400


def test_throttling_answers_429_with_retry_after(client, catalog, settings):
    cache.clear()
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "THROTTLE_RATES": {"shop_search_text": "2/day"},
    }
    statuses = [client.get("/api/search/", {"q": "hat"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    response = client.get("/api/search/", {"q": "hat"})
    assert int(response["Retry-After"]) > 0
    assert response.json()["code"] == "throttled"
    cache.clear()


def test_model_that_cannot_load_is_503(client, catalog, settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "TEXT_MODEL": "/nonexistent/text"}
    response = client.get("/api/search/", {"q": "anything"})
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["code"] == "model_unavailable"


def test_the_openapi_schema_validates(client, tmp_path):
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
    )
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/api/search/",
        "/api/search/image/",
        "/api/products/{id}/similar/",
        "/api/categories/suggest/",
    } <= set(paths)
    params = {p["name"] for p in paths["/api/search/"]["get"]["parameters"]}
    assert {"q", "limit", "offset", "category", "min_price", "in_stock"} <= params


def test_a_category_that_does_not_exist_finds_nothing_without_error(client, catalog):
    # Found by schemathesis: the filter makes an empty queryset, whose SQL
    # cannot be compiled or explained.
    response = client.get(
        "/api/search/", {"q": "dress", "category": 2**62, "facets": "true"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["results"] == [] and body["count"] == 0 and body["facets"] == []


def _queries(call) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        call()
    return len(queries.captured_queries)


def test_a_longer_page_of_results_costs_no_more_queries(client, catalog):
    # The category each product shows comes with the products themselves,
    # whatever the number of results.
    def page(limit):
        body = client.get("/api/search/", {"q": "dress", "limit": limit}).json()
        assert len(body["results"]) == limit
        assert all(r["product"]["category"] for r in body["results"])

    client.get("/api/search/", {"q": "shoe"})  # per-process caches filled
    assert _queries(lambda: page(2)) == _queries(lambda: page(20))


def test_serializer_lookups_join_foreign_keys_only_where_they_are_loaded():
    from shop_search.api.views import _joined

    products = Product.objects.all()
    assert _joined(products, ("category",)).query.select_related == {"category": {}}
    # Not loaded by only(): left to the serializer's prefetch.
    assert not _joined(products.only("name"), ("category",)).query.select_related
    assert not _joined(products.defer("category"), ("category",)).query.select_related
    # Neither a field that is no relation nor an unknown name is joined.
    assert not _joined(products, ("name", "nothing__here")).query.select_related


def test_the_schema_says_a_look_search_answers_a_look_result(client):
    schema = client.get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    ).json()
    ok = schema["paths"]["/api/search/image/"]["post"]["responses"]["200"]
    ref = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    choices = schema["components"]["schemas"][ref]["oneOf"]
    assert {c["$ref"].rsplit("/", 1)[-1] for c in choices} == {
        "SearchResult",
        "LookResult",
    }
