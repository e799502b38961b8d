"""The framework owns /search/; shop_search's page lives under /find/."""

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("search/", lambda request: HttpResponse("the framework's own search")),
    path("find/", include("shop_search.urls")),
    path("api/", include("shop_search.api.urls")),
    path("admin/", admin.site.urls),
]
