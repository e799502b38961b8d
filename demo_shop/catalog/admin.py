from django.contrib import admin

from shop_search.admin import SearchableAdminMixin

from .models import Category, Product, ProductImage


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


class ProductImageInline(admin.TabularInline):
    """The gallery, in display order; shop_search re-encodes what changes."""

    model = ProductImage
    fields = ["image", "position"]
    extra = 0


@admin.register(Product)
class ProductAdmin(SearchableAdminMixin, admin.ModelAdmin):
    list_display = ["name", "category", "price", "in_stock", "is_published"]
    list_filter = ["is_published", "category", "in_stock"]
    search_fields = ["name", "sku"]
    inlines = [ProductImageInline]
