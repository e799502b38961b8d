from django.contrib import admin

from shop_search.admin import SearchableAdminMixin

from .models import Category, Product


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(SearchableAdminMixin, admin.ModelAdmin):
    list_display = ["name", "category", "price", "in_stock"]
    list_filter = ["category", "in_stock"]
    search_fields = ["name", "sku"]
