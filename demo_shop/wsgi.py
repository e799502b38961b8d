import logging
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_shop.settings")
application = get_wsgi_application()

# Load the models now, so the first shopper's search does not wait for them.
try:
    from shop_search.switching import warm_up

    warm_up()
except Exception:  # a model that cannot load: searches answer 503, saves go on
    logging.getLogger("shop_search").exception("shop_search: model warm-up failed")
