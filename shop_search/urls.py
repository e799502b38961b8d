"""Mount the storefront page: ``path("search/", include("shop_search.urls"))``."""

from django.urls import path

from .views import SearchPageView

app_name = "shop_search"

urlpatterns = [path("", SearchPageView.as_view(), name="search")]
