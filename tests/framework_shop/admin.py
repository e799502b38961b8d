from django.contrib import admin

from shop_search.admin import SearchableAdminMixin

from .models import Product


@admin.register(Product)
class ProductAdmin(SearchableAdminMixin, admin.ModelAdmin):
    pass
