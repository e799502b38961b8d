from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.static import serve

from demo_shop.catalog import views

urlpatterns = [
    path("", views.product_list, name="product_list"),
    path("products/<int:pk>/", views.product_detail, name="product_detail"),
    path("admin/", admin.site.urls),
    path("api/", include("shop_search.api.urls")),
    path("search/", include("shop_search.urls")),
    path(
        "media/<path:path>",
        serve,
        {"document_root": settings.MEDIA_ROOT},
    ),
]
