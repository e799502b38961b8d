"""
Mount under a prefix of your choice::

    path("api/", include("shop_search.api.urls"))

gives ``api/search/``, ``api/search/image/``, ``api/products/<pk>/similar/``,
``api/categories/suggest/``, ``api/suggest/`` (autocomplete) and the OpenAPI
schema at ``api/schema/``.
"""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from . import views

app_name = "shop_search_api"

urlpatterns = [
    path("search/", views.TextSearchView.as_view(), name="search"),
    path("search/image/", views.ImageSearchView.as_view(), name="search-image"),
    path(
        "products/<str:pk>/similar/",
        views.SimilarProductsView.as_view(),
        name="similar",
    ),
    path("suggest/", views.SuggestView.as_view(), name="suggest"),
    path(
        "categories/suggest/",
        views.CategorySuggestView.as_view(),
        name="categories-suggest",
    ),
    path(
        "schema/",
        SpectacularAPIView.as_view(),
        name="schema",
    ),
]
