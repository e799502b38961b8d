"""The storefront search API (Django REST framework). Mount ``shop_search.api.urls``."""
