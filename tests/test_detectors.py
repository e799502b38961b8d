"""Shop the look: proposals, suppression, and per-item results."""

from __future__ import annotations

import pytest
from PIL import Image

from demo_shop.catalog.models import Category, Product
from shop_search import search
from shop_search.detectors import CropDetector, Detection, non_max_suppression

from .conftest import png_bytes, synthetic_products


def test_proposals_cover_the_image_at_several_scales():
    boxes = CropDetector().proposals(400, 300)
    assert len(boxes) >= 20
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
    sizes = {round((x1 - x0) / 400, 2) for x0, _, x1, _ in boxes}
    assert {0.4, 0.55, 0.75, 1.0} <= sizes


def test_non_max_suppression_keeps_the_best_of_overlapping_boxes():
    a = Detection((0, 0, 100, 100), "Dresses", 0.9)
    b = Detection((5, 5, 100, 100), "Dresses", 0.8)  # overlaps a
    c = Detection((200, 0, 300, 100), "Shoes", 0.7)
    assert non_max_suppression([b, c, a]) == [a, c]


@pytest.mark.django_db
def test_shop_the_look_returns_boxes_in_the_uploaded_image(category, settings):
    shoes = Category.objects.create(name="Shoes", slug="shoes")
    synthetic_products(category, 30, seed=1)
    synthetic_products(shoes, 30, seed=2)
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "DETECTION_MIN_SCORE": 0.0,
        "DETECTION_MAX_ITEMS": 3,
    }
    # a "photo" larger than the working size: boxes must come back in its pixels
    photo = Image.new("RGB", (1600, 1200), "white")
    photo.paste(Image.new("RGB", (500, 700), "red"), (100, 100))
    photo.paste(Image.new("RGB", (400, 200), "black"), (1000, 900))
    import io

    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    look = search.shop_the_look(Product.objects.all(), buffer.getvalue(), limit=4)
    assert look.image_size == (1600, 1200)
    assert 1 <= len(look.items) <= 3
    for item in look.items:
        x0, y0, x1, y1 = item.box
        assert 0 <= x0 < x1 <= 1600 and 0 <= y0 < y1 <= 1200
        assert len(item.page) == 4
        assert {hit.object.category for hit in item.page} == {item.category}
    assert len(look.whole_image) == 4


@pytest.mark.django_db
def test_no_items_above_the_threshold_still_gives_whole_image_results(
    category, settings
):
    synthetic_products(category, 10)
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "DETECTION_MIN_SCORE": 1.01}
    look = search.shop_the_look(Product.objects.all(), png_bytes("red"), limit=5)
    assert look.items == [] and len(look.whole_image) == 5


@pytest.mark.django_db
def test_owlvit_detector_through_shop_the_look(category, settings):
    from shop_search.testing import build_test_detector

    shoes = Category.objects.create(name="Shoes", slug="shoes")
    synthetic_products(category, 10, seed=1)
    synthetic_products(shoes, 10, seed=2)
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "DETECTOR_CLASS": "shop_search.detectors.OwlVitDetector",
        "DETECTOR_MODEL": build_test_detector(settings.TEST_MODELS_DIR),
        "DETECTION_MIN_SCORE": 0.0,
    }
    look = search.shop_the_look(Product.objects.all(), png_bytes("red", (300, 200)))
    assert len(look.whole_image) > 0
    for item in look.items:  # random weights: boxes are arbitrary but valid
        x0, y0, x1, y1 = item.box
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 200
        assert item.category in (category, shoes)


@pytest.mark.django_db
def test_an_unavailable_detector_model_is_a_clear_503(client, category, settings):
    synthetic_products(category, 5)
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "DETECTOR_CLASS": "shop_search.detectors.OwlVitDetector",
        "DETECTOR_MODEL": "/nonexistent/owlvit",
    }
    from django.core.files.uploadedfile import SimpleUploadedFile

    photo = SimpleUploadedFile("p.png", png_bytes(), "image/png")
    response = client.post("/api/search/image/", {"image": photo, "group": "look"})
    assert response.status_code == 503
    assert response.json()["code"] == "model_unavailable"
