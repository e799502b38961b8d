"""The storefront search page, server-side."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from .conftest import png_bytes

pytestmark = pytest.mark.django_db


def test_text_search_shows_results_and_category_chips(client, catalog):
    response = client.get("/search/", {"q": "rotes Kleid"})
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('class="ss-card"') == 24
    assert 'class="ss-chip' in html and "Shoes" in html
    assert "Next" in html


def test_a_category_chip_refines_the_search(client, catalog):
    _dresses, shoes = catalog
    html = client.get("/search/", {"q": "shoe", "category": shoes.pk}).content.decode()
    assert html.count("Synthetic") >= 24
    assert f'ss-chip active" href="?q=shoe&amp;category={shoes.pk}"' in html


def test_bad_input_is_shown_as_a_message(client, catalog):
    response = client.get("/search/", {"q": "x" * 300})
    assert response.status_code == 400
    assert "limit is 200" in response.content.decode()
    response = client.get("/search/", {"q": "x", "max_price": "lots"})
    assert response.status_code == 400


def test_photo_search_and_shop_the_look(client, catalog, settings):
    photo = SimpleUploadedFile("p.png", png_bytes("red", (300, 200)), "image/png")
    html = client.post("/search/", {"image": photo}).content.decode()
    assert html.count('class="ss-card"') == 24
    assert 'src="data:image/jpeg;base64,' in html
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "DETECTION_MIN_SCORE": 0.0}
    photo = SimpleUploadedFile("p.png", png_bytes("red", (300, 200)), "image/png")
    html = client.post("/search/", {"image": photo, "look": "on"}).content.decode()
    assert 'class="ss-box"' in html and 'class="ss-item"' in html


def test_a_broken_photo_is_a_message_not_an_error(client, catalog):
    photo = SimpleUploadedFile("p.png", b"not an image", "image/png")
    response = client.post("/search/", {"image": photo})
    assert response.status_code == 400
    assert "not an image in a supported format" in response.content.decode()
