"""The demo shop's Celery app (used when SHOP_SEARCH['INDEXING_MODE'] = "celery")."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_shop.settings")

app = Celery("demo_shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
