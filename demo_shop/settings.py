"""Settings for the demo shop. Environment variables override the defaults."""

import os
from pathlib import Path

from shop_search.embedded_db import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
# Result links and image URLs are built from the request's Host: set the
# site's own names in production (DJANGO_ALLOWED_HOSTS=shop.example.com).
ALLOWED_HOSTS = os.environ.get(
    "DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver"
).split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "shop_search",
    "demo_shop.catalog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_shop.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "demo_shop" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "demo_shop.wsgi.application"

# DATABASE_URL, or the embedded PostgreSQL + pgvector in .pgdata/, through
# Django's connection pool: a process holds at most DB_POOL_SIZE connections
# however many threads serve requests (runserver starts one per request), and
# a request that waits longer than DB_POOL_TIMEOUT for one gets 503.
DATABASES = {
    "default": database_settings(
        BASE_DIR / ".pgdata",
        pool={
            "min_size": 1,
            "max_size": int(os.environ.get("DB_POOL_SIZE", "10")),
            "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "5")),
        },
    )
}


def _redis_reachable(url: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.3
        ):
            return True
    except OSError:
        return False


# A cache shared by every process: throttle counts and cached rankings must
# be the same for all workers (a per-process cache multiplies each limit by
# the number of processes). Redis when it answers, else Django's database
# cache (`manage.py createcachetable`, which the demo command runs).
REDIS_CACHE_URL = os.environ.get("REDIS_CACHE_URL", "redis://127.0.0.1:6379/1")
if _redis_reachable(REDIS_CACHE_URL):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_CACHE_URL,
            "KEY_PREFIX": "demo_shop",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "demo_shop_cache",
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("DEMO_MEDIA_ROOT", BASE_DIR / "media"))

SHOP_SEARCH = {
    "IMAGE_MODEL": os.environ.get("SHOP_SEARCH_IMAGE_MODEL", "clip-ViT-B-32"),
    "TEXT_MODEL": os.environ.get(
        "SHOP_SEARCH_TEXT_MODEL",
        "sentence-transformers/clip-ViT-B-32-multilingual-v1",
    ),
    "INDEXING_MODE": os.environ.get("SHOP_SEARCH_INDEXING_MODE", "sync"),
    "PRECISION": os.environ.get("SHOP_SEARCH_PRECISION", "auto"),
    "PRODUCT_SERIALIZER": "demo_shop.catalog.serializers.ProductSerializer",
    "RESULT_PRICE": "demo_shop.catalog.display.price_label",
    "FILTERS": {
        "min_price": "price__gte",
        "max_price": "price__lte",
        "in_stock": "in_stock",
        "colour": "colour__iexact",
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

if os.environ.get("SHOP_SEARCH_THROTTLE_OFF"):  # load benchmarks measure the work
    SHOP_SEARCH["THROTTLE_RATES"] = {}

SPECTACULAR_SETTINGS = {
    "TITLE": "Demo shop search API",
    "DESCRIPTION": "Multilingual text, photo and shop-the-look product search "
    "(shop_search).",
    "VERSION": "1.0.0",
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "shop_search": {"handlers": ["console"], "level": "INFO"},
        # Server errors with their traceback, with DEBUG off too.
        "django.request": {
            "handlers": ["console"],
            "level": "ERROR",
            "propagate": False,
        },
    },
}
