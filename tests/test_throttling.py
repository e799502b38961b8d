"""Rate limits a hostile client cannot step around."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.cache import caches

pytestmark = pytest.mark.django_db

REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": "redis://127.0.0.1:6379/14",
    "KEY_PREFIX": "shop_search_tests",
}


# Counts are per fixed window; a day-long window keeps a test's requests
# (and the child process's, seconds later) in one window.


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "THROTTLE_RATES": rates}
        caches["default"].clear()

    yield set_rates
    caches["default"].clear()


def _statuses(client, count, path="/api/search/", **extra):
    return [
        client.get(path, {"q": f"red dress {n}", "limit": 1}, **extra).status_code
        for n in range(count)
    ]


def test_a_rotating_forwarded_for_header_does_not_reset_the_count(
    client, catalog, rates
):
    rates(shop_search_text="5/day")
    codes = [
        client.get(
            "/api/search/", {"q": "shoe"}, HTTP_X_FORWARDED_FOR=f"10.0.0.{n}"
        ).status_code
        for n in range(8)
    ]
    assert codes == [200] * 5 + [429] * 3


def test_behind_a_trusted_proxy_the_client_is_what_the_proxy_appended(
    client, catalog, rates, settings
):
    rates(shop_search_text="3/day")
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "NUM_PROXIES": 1}
    # The client forges the first entries; the proxy appends the real address.
    first = [
        client.get(
            "/api/search/",
            {"q": "shoe"},
            HTTP_X_FORWARDED_FOR=f"1.1.1.{n}, 203.0.113.7",
        ).status_code
        for n in range(4)
    ]
    assert first == [200, 200, 200, 429]
    # Another shopper behind the same proxy has a count of their own.
    other = client.get(
        "/api/search/", {"q": "shoe"}, HTTP_X_FORWARDED_FOR="198.51.100.9"
    )
    assert other.status_code == 200


def test_the_storefront_page_is_throttled_like_the_api(client, catalog, rates):
    rates(shop_search_text="3/day", shop_search_image="1/day")
    assert client.get("/search/").status_code == 200  # the empty form is free
    codes = _statuses(client, 4, path="/search/")
    assert codes == [200, 200, 200, 429]
    response = client.get("/search/", {"q": "hat"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert b"Too many searches" in response.content
    # The page and the API share the scope's count.
    assert client.get("/api/search/", {"q": "hat"}).status_code == 429
    # HEAD runs the same search as GET (found by a hostile client).
    assert client.head("/search/", {"q": "cap"}).status_code == 429


def test_wrong_passwords_are_counted_then_refused(client, catalog, rates):
    rates(shop_search_auth="3/day")
    User.objects.create_user("staff", password="right-password", is_staff=True)

    def basic(password):
        token = base64.b64encode(f"staff:{password}".encode()).decode()
        return client.get(
            "/api/search/", {"q": "shoe"}, HTTP_AUTHORIZATION=f"Basic {token}"
        )

    assert [basic(f"guess-{n}").status_code for n in range(3)] == [403] * 3
    refused = basic("guess-4")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled" and "Retry-After" in refused
    # Past the limit even the right password is not checked until the window ends.
    assert basic("right-password").status_code == 429
    # Shoppers from elsewhere are not locked out.
    other = client.get("/api/search/", {"q": "shoe"}, REMOTE_ADDR="192.0.2.44")
    assert other.status_code == 200
    # Nor those who share the guesser's address (a NAT) and send no password.
    assert client.get("/api/search/", {"q": "shoe"}).status_code == 200


def test_the_count_is_shared_by_every_process(client, catalog, rates, settings):
    """Two processes (this one and a child) against one Redis count together."""
    settings.CACHES = {"default": REDIS}
    rates(shop_search_text="4/day")
    assert _statuses(client, 3) == [200, 200, 200]
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup();"
            "from django.test import override_settings;"
            "from shop_search import throttling;"
            f"caches = {{'default': {REDIS!r}}};"
            "rates = {'shop_search_text': '4/day'};"
            "from django.conf import settings;"
            "s = {**settings.SHOP_SEARCH, 'THROTTLE_RATES': rates};"
            "ctx = override_settings(CACHES=caches, SHOP_SEARCH=s); ctx.enable();"
            "print([throttling.hit('shop_search_text', 'addr:127.0.0.1')"
            " is None for _ in range(2)])",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.stdout.strip().splitlines()[-1] == "[True, False]", child.stderr
    assert _statuses(client, 1) == [429]


def test_the_demo_uses_a_cache_shared_across_processes():
    import demo_shop.settings as demo

    backend = demo.CACHES["default"]["BACKEND"]
    assert backend in {
        "django.core.cache.backends.redis.RedisCache",
        "django.core.cache.backends.db.DatabaseCache",
    }


def test_forged_posts_do_not_spend_a_shoppers_photo_searches(client, catalog, rates):
    """A page on another site can make a shopper's browser post to the
    search page; without the CSRF token those posts are refused and not
    counted."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from .conftest import png_bytes

    rates(shop_search_image="2/min")
    shopper = Client(enforce_csrf_checks=True)
    shopper.get("/search/")  # the form sets the CSRF cookie

    def photo(**fields):
        upload = SimpleUploadedFile("p.png", png_bytes(), "image/png")
        return shopper.post("/search/", {"image": upload, **fields}).status_code

    assert [photo() for _ in range(3)] == [403, 403, 403]
    token = shopper.cookies["csrftoken"].value
    assert photo(csrfmiddlewaretoken=token) == 200
    assert shopper.put("/search/").status_code == 403  # any unsafe method


def test_past_the_limit_no_credentials_are_checked(client, catalog, rates, monkeypatch):
    """Credentials sent outside the Authorization header (an API key, say)
    are not checked either once an address is over the failed-login limit."""
    from rest_framework.authentication import BaseAuthentication
    from rest_framework.exceptions import AuthenticationFailed

    from shop_search.api.views import TextSearchView

    checked = []

    class KeyAuthentication(BaseAuthentication):
        def authenticate(self, request):
            key = request.META.get("HTTP_X_API_KEY")
            if key is None:
                return None
            checked.append(key)
            raise AuthenticationFailed("Unknown key.")

    monkeypatch.setattr(TextSearchView, "authentication_classes", [KeyAuthentication])
    rates(shop_search_auth="3/day")

    def search(key):
        return client.get("/api/search/", {"q": "shoe"}, HTTP_X_API_KEY=key)

    assert [search(f"guess-{n}").status_code for n in range(3)] == [403] * 3
    assert search("guess-4").status_code == 200  # as anonymous: not checked
    assert checked == ["guess-0", "guess-1", "guess-2"]
