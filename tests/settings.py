"""Test settings: the demo project with tiny local models and a temporary media root."""

import os
import tempfile
from pathlib import Path

from demo_shop.settings import *  # noqa: F401,F403
from demo_shop.settings import BASE_DIR, DATABASES, INSTALLED_APPS, SHOP_SEARCH

# A second searchable model, shaped like a shop framework's catalog.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.framework_shop"]

# Built by tests/conftest.py (shop_search.testing.build_test_models) on first run.
TEST_MODELS_DIR = Path(BASE_DIR) / ".models"

SHOP_SEARCH = {
    **SHOP_SEARCH,
    "IMAGE_MODEL": str(TEST_MODELS_DIR / "tiny-clip"),
    "TEXT_MODEL": str(TEST_MODELS_DIR / "tiny-multilingual-text"),
    "BATCH_SIZE": 8,
    "INDEXING_MODE": "sync",
    # Tests that exercise throttling set their own rates.
    "THROTTLE_RATES": {},
    # Tests see every change at once; test_api turns the cache on itself.
    "RESULT_CACHE_SECONDS": 0,
    # The API and the page search the demo's catalog unless a test says not.
    "PRODUCT_MODEL": "catalog.Product",
    # The tiny random models make every query noise; tests of the no-match
    # answer turn it on themselves.
    "NO_MATCH": False,
}

# Shared with the subprocesses the fault tests start (they inherit the variable).
os.environ.setdefault(
    "SHOP_SEARCH_TEST_MEDIA", tempfile.mkdtemp(prefix="shop_search_media_")
)
MEDIA_ROOT = Path(os.environ["SHOP_SEARCH_TEST_MEDIA"])
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
# Unacknowledged tasks of a killed worker come back after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("SHOP_SEARCH_TEST_VISIBILITY", "3600"))
}
LOGGING = {"version": 1, "disable_existing_loggers": False}

# Each test run counts throttles and caches rankings on its own; the tests
# that need a cache shared across processes configure Redis themselves.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# A saturated pool answers 503 after this long (tests/test_pool.py waits it out).
DATABASES["default"]["OPTIONS"]["pool"]["timeout"] = 2.0
