from django.db import models
from django.db.models.functions import Upper
from django.urls import reverse
from django.utils.translation import get_language

from shop_search.models import SearchableProduct


class Category(models.Model):
    """A product category; ``translations`` maps language codes to names."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(unique=True)
    translations = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def localized_name(self, language: str | None = None) -> str:
        language = (language or get_language() or "en").split("-")[0]
        return self.translations.get(language, self.name)


class Product(SearchableProduct):
    sku = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    name_translations = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    category = models.ForeignKey(
        Category, on_delete=models.PROTECT, related_name="products"
    )
    colour = models.CharField(max_length=40, blank=True)
    image = models.ImageField(upload_to="products/", blank=True)
    in_stock = models.BooleanField(default=True)
    #: Unpublished products never reach shoppers (see visible_products).
    is_published = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The main photo, then the gallery's, in display order.
    search_images = ["image", "gallery__image"]
    # What shoppers may find, for every search (a dotted path or a callable).
    search_queryset = "demo_shop.catalog.models.visible_products"
    search_text_fields = ["name", "name_translations", "description"]
    search_name_fields = ["name", "name_translations"]
    search_identifier_fields = ["sku"]
    search_category_field = "category"

    class Meta(SearchableProduct.Meta):
        ordering = ["name"]
        indexes = [
            # The API's colour filter (colour__iexact): an index gives the
            # planner statistics, which shop_search uses to rank small
            # filtered sets exactly (EXACT_SCAN_THRESHOLD), and serves them.
            models.Index(Upper("colour"), name="catalog_product_colour_ci"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("product_detail", args=[self.pk])

    def localized_name(self, language: str | None = None) -> str:
        language = (language or get_language() or "en").split("-")[0]
        return self.name_translations.get(language, self.name)


class ProductImage(models.Model):
    """More photos of a product: other angles, other colours of the item."""

    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, related_name="gallery"
    )
    image = models.ImageField(upload_to="gallery/")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return f"{self.product} #{self.position}"


def visible_products(request=None):
    """What shoppers may find (Product.search_queryset)."""
    return Product.objects.filter(is_published=True)
