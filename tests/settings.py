"""Test settings: the demo project with tiny local models and a temporary media root."""

import tempfile
from pathlib import Path

from demo_shop.settings import *  # noqa: F401,F403
from demo_shop.settings import BASE_DIR, SHOP_SEARCH

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
}

MEDIA_ROOT = Path(tempfile.mkdtemp(prefix="shop_search_media_"))
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
LOGGING = {"version": 1, "disable_existing_loggers": False}
