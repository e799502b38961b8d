"""Hostile and odd images through the loader, the API and product saves."""

from __future__ import annotations

import collections
import sys

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile

from demo_shop.catalog.models import Product
from shop_search.exceptions import ImageError
from shop_search.images import load_image
from shop_search.models import IndexStatus
from shop_search.testing import index_view

from .conftest import png_bytes, synthetic_products
from .hostile_images import corpus

CORPUS = corpus()


def test_the_corpus_is_large_and_varied():
    assert len(CORPUS) >= 100
    assert len({name.rsplit(".", 1)[-1] for name, _ in CORPUS}) >= 6


def test_a_bomb_is_refused_in_the_apps_words_not_pillows():
    """Found by a hostile client: the message quoted Pillow ("...could be
    decompression bomb DOS attack") to shoppers."""
    from .hostile_images import png_with_header

    with pytest.raises(ImageError) as refused:
        load_image(png_with_header(30000, 30000), upload=True)
    assert refused.value.code == "image_too_many_pixels"
    message = refused.value.message
    assert "DOS" not in message and "bomb" not in message
    # The limit the shop set, not Pillow's own (89,478,485 pixels).
    assert "12,000,000 (SHOP_SEARCH['MAX_UPLOAD_PIXELS'])" in message


def test_the_loader_accepts_or_refuses_every_file_with_a_code():
    outcomes = collections.Counter()
    for _name, data in CORPUS:
        try:
            image = load_image(data)
        except ImageError as exc:
            outcomes[exc.code] += 1
            continue
        assert image.mode == "RGB" and min(image.size) >= 1
        assert max(image.size) <= 768
        outcomes["ok"] += 1
    assert outcomes["ok"] >= 40
    assert {
        "image_corrupt",
        "image_unsupported_format",
        "image_too_many_pixels",
        "image_empty",
    } <= set(outcomes)


@pytest.mark.django_db
def test_no_corpus_image_makes_the_api_fail(client, category):
    synthetic_products(category, 20)
    statuses = collections.Counter()
    for name, data in CORPUS:
        upload = SimpleUploadedFile(name, data, content_type="application/octet-stream")
        response = client.post("/api/search/image/", {"image": upload, "limit": 3})
        statuses[response.status_code] += 1
        assert response.status_code in (200, 400, 413), (name, response.content[:200])
        body = response.json()
        if response.status_code != 200:
            assert body["code"].startswith("image_") and body["message"]
    sys.stdout.write(
        f"\ncorpus via API: {len(CORPUS)} images, {statuses[500]} responses with "
        f"status 500, statuses {dict(statuses)}\n"
    )
    assert statuses[500] == 0


@pytest.mark.django_db(transaction=True)
def test_every_product_save_with_a_corpus_image_is_kept(category):
    for n, (name, data) in enumerate(CORPUS):
        product = Product(sku=f"H-{n}", name=name, price=1, category=category)
        product.image.save(name, ContentFile(data), save=False)
        product.save()
    products = list(Product.objects.all())
    assert len(products) == len(CORPUS)  # 0 saves lost
    statuses = collections.Counter(index_view(p).status for p in products)
    assert set(statuses) <= {
        IndexStatus.INDEXED,
        IndexStatus.FAILED,
        IndexStatus.NO_IMAGE,
    }
    assert statuses[IndexStatus.MISSING] == 0
    failed = [p for p in products if index_view(p).status == IndexStatus.FAILED]
    assert all(index_view(p).error.startswith("image_") for p in failed)
    sys.stdout.write(
        f"\ncorpus via product saves: {len(CORPUS)} saved, 0 lost, {dict(statuses)}\n"
    )


@pytest.mark.django_db
def test_an_oversized_upload_is_413_before_it_is_read(client, settings, category):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "MAX_IMAGE_BYTES": 10_000}
    big = SimpleUploadedFile("big.png", b"\x89PNG" + b"\0" * 200_000, "image/png")
    response = client.post("/api/search/image/", {"image": big})
    assert response.status_code == 413
    assert response.json()["code"] == "image_too_large"
    # the same through the page
    big.seek(0)
    page = client.post("/search/", {"image": big})
    assert page.status_code == 413


def _declaring(client, url: str, declared: int, **extra):
    """POST a small multipart body that declares ``declared`` bytes: a read
    of the body fails the test (the test client has fewer to give)."""
    body = (
        b"--x\r\nContent-Disposition: form-data; name=image; filename=p.png\r\n"
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--x--\r\n"
    )
    return client.generic(
        "POST",
        url,
        body,
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(declared),
        **extra,
    )


@pytest.mark.django_db
def test_an_oversized_upload_is_413_before_the_csrf_check_reads_it(
    settings, category, django_user_model, monkeypatch
):
    """CsrfViewMiddleware (the page) and DRF's SessionAuthentication (the API,
    for a logged-in shopper) read the whole body to find the form's token:
    the size is checked from the headers before either does, and nothing
    reads the body after (not even DRF's browsable API, which shows the
    user)."""
    from django.test import Client
    from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer

    from shop_search.api.views import ImageSearchView

    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "MAX_IMAGE_BYTES": 10_000}
    shopper = Client(enforce_csrf_checks=True)
    shopper.cookies["csrftoken"] = "a" * 32  # a cookie, no token in the form
    assert _declaring(shopper, "/search/", 10**9).status_code == 413
    shopper.force_login(django_user_model.objects.create_user("shopper"))
    api = _declaring(shopper, "/api/search/image/", 10**9)
    assert api.status_code == 413 and api.json()["code"] == "image_too_large"
    renderers = [BrowsableAPIRenderer, JSONRenderer]
    monkeypatch.setattr(ImageSearchView, "renderer_classes", renderers)
    browsable = _declaring(
        shopper, "/api/search/image/", 10**9, HTTP_ACCEPT="text/html"
    )
    assert browsable.status_code == 413
    assert browsable.json()["code"] == "image_too_large"


@pytest.mark.django_db
def test_the_page_still_checks_the_csrf_token_of_a_photo_search(category):
    from django.test import Client

    shopper = Client(enforce_csrf_checks=True)
    photo = {"image": SimpleUploadedFile("p.png", png_bytes(), "image/png")}
    assert shopper.post("/search/", photo).status_code == 403
    shopper.get("/search/")  # the form sets the CSRF cookie
    token = shopper.cookies["csrftoken"].value
    photo = {"image": SimpleUploadedFile("p.png", png_bytes(), "image/png")}
    answered = shopper.post("/search/", {**photo, "csrfmiddlewaretoken": token})
    assert answered.status_code == 200


@pytest.mark.django_db
def test_without_a_csrf_middleware_the_page_takes_photos_as_before(settings, category):
    """The page checks CSRF itself only where the project's middleware did."""
    from django.test import Client

    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if ".csrf." not in m]
    shopper = Client(enforce_csrf_checks=True)
    photo = {"image": SimpleUploadedFile("p.png", png_bytes(), "image/png")}
    assert shopper.post("/search/", photo).status_code == 200


@pytest.mark.django_db
def test_a_chunked_upload_is_told_to_send_its_length(client, category):
    """Django reads no body without a Content-Length: without this check a
    chunked upload was answered "No file was submitted"."""
    response = client.generic(
        "POST",
        "/api/search/image/",
        b"",
        content_type="multipart/form-data; boundary=x",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert response.status_code == 411
    assert response.json()["code"] == "length_required"
    page = client.generic(
        "POST",
        "/search/",
        b"",
        content_type="multipart/form-data; boundary=x",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert page.status_code == 411


@pytest.mark.django_db
def test_an_upload_is_cut_off_while_streaming_past_the_limit(
    client, settings, category
):
    # Within the multipart envelope allowance, so the Content-Length check
    # passes; the upload handler stops the file at the limit.
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "MAX_IMAGE_BYTES": 10_000}
    upload = SimpleUploadedFile("big.png", b"\x89PNG" + b"\0" * 40_000, "image/png")
    response = client.post("/api/search/image/", {"image": upload})
    assert response.status_code == 413
    assert response.json()["code"] == "image_too_large"
    assert response.json()["message"].startswith("The upload is larger")  # not decoded


@pytest.mark.django_db
def test_saturated_encoders_answer_503_with_retry_after(client, settings, category):
    import threading

    from shop_search.search import encoder_gate

    synthetic_products(category, 5)
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "QUERY_CONCURRENCY": 1,
        "QUERY_QUEUE_TIMEOUT": 0.2,
    }
    release = threading.Event()
    entered = threading.Event()

    def hold() -> None:
        with encoder_gate:
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        response = client.get("/api/search/", {"q": "a query nobody asked before"})
        assert response.status_code == 503
        assert response["Retry-After"] == "2"
        assert response.json()["code"] == "busy"
    finally:
        release.set()
        holder.join()
    assert (
        client.get("/api/search/", {"q": "a query nobody asked before"}).status_code
        == 200
    )


def test_queries_waiting_for_a_busy_encoder_are_encoded_together(settings):
    import threading
    import time

    import numpy as np

    from shop_search.encoders import get_text_encoder
    from shop_search.search import encoder_gate, query_cache

    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "QUERY_CONCURRENCY": 1}
    encoder = get_text_encoder()
    texts = ["rotes Kleid", "blue lamp", "chaise longue en cuir"]
    alone = {text: encoder.encode_texts([text])[0] for text in texts}
    query_cache.clear()
    calls: list[list[str]] = []
    real = encoder.encode_texts

    def recording(batch):
        calls.append(list(batch))
        return real(batch)

    encoder.encode_texts = recording
    release = threading.Event()
    results: dict[str, np.ndarray] = {}

    def hold() -> None:
        with encoder_gate:
            release.wait(5)

    def ask(text: str) -> None:
        results[text] = encoder_gate.encode_text(encoder, text)

    holder = threading.Thread(target=hold)
    holder.start()
    askers = [threading.Thread(target=ask, args=(text,)) for text in texts]
    try:
        while encoder_gate.running < 1:
            time.sleep(0.01)
        for asker in askers:
            asker.start()
        deadline = time.monotonic() + 5
        while encoder_gate.waiting < len(texts) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        release.set()
        holder.join()
        for asker in askers:
            asker.join()
        del encoder.encode_texts
    assert len(calls) == 1 and sorted(calls[0]) == sorted(texts)
    for text in texts:  # each query gets its own vector, as if encoded alone
        assert float(results[text] @ alone[text]) > 0.999


def test_a_query_batched_by_another_request_is_answered_past_its_timeout(settings):
    import threading
    import time

    from shop_search.encoders import get_text_encoder
    from shop_search.search import encoder_gate, query_cache

    # Two queries wait for the busy encoder; when it frees, one of them
    # encodes both, more slowly than the other's queue timeout. The other must
    # get its vector, not a "busy" error for a query already being encoded.
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "QUERY_CONCURRENCY": 1,
        "QUERY_QUEUE_TIMEOUT": 0.5,
    }
    encoder = get_text_encoder()
    query_cache.clear()
    real = encoder.encode_texts

    def slow(batch):
        if len(batch) > 1:
            time.sleep(0.8)
        return real(batch)

    encoder.encode_texts = slow
    release = threading.Event()
    results: dict[str, object] = {}

    def hold() -> None:
        with encoder_gate:
            release.wait(5)

    def ask(text: str) -> None:
        try:
            results[text] = encoder_gate.encode_text(encoder, text)
        except Exception as exc:  # noqa: BLE001 - the assertion shows it
            results[text] = exc

    holder = threading.Thread(target=hold)
    holder.start()
    askers = [threading.Thread(target=ask, args=(t,)) for t in ("hat", "mug")]
    try:
        while encoder_gate.running < 1:
            time.sleep(0.01)
        for asker in askers:
            asker.start()
        while encoder_gate.waiting < 2:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        release.set()
        holder.join()
        for asker in askers:
            asker.join()
        del encoder.encode_texts
    assert all(getattr(v, "shape", None) == (512,) for v in results.values()), results
    assert (encoder_gate.running, encoder_gate.waiting) == (0, 0)


@pytest.mark.django_db
def test_malformed_multipart_is_400(client, category):
    response = client.generic(
        "POST",
        "/api/search/image/",
        b"--xyz\r\nContent-Disposition: form-data\r\n\r\n",
        content_type="multipart/form-data; boundary=",
    )
    assert response.status_code == 400
    assert "code" in response.json()
