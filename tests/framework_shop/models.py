"""
A catalog shaped like a shop framework's (django-oscar's, roughly): the
product model knows nothing of shop_search; images live in a gallery,
categories are a many-to-many tree, prices and availability live on stock
records, products have parent/child variants and a published flag.
It is made searchable in apps.py with the README's snippet.
"""

from django.db import models


class Category(models.Model):  # noqa: DJ008 - on purpose
    # No __str__, as in many frameworks' abstract bases: names must still read.
    name = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )


class Product(models.Model):
    title = models.CharField(max_length=200)
    upc = models.CharField(max_length=64, blank=True)
    description = models.TextField(blank=True)
    categories = models.ManyToManyField(Category, related_name="products", blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    is_public = models.BooleanField(default=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class ProductImage(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, related_name="images"
    )
    original = models.ImageField(upload_to="framework/")
    display_order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["display_order"]

    def __str__(self) -> str:
        return f"{self.product_id}:{self.display_order}"


class StockRecord(models.Model):  # noqa: DJ008
    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, related_name="stockrecords"
    )
    partner = models.CharField(max_length=50)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    num_in_stock = models.PositiveIntegerField(default=1)


def browsable(request):
    """What shoppers may find: public products with a price in stock."""
    return Product.objects.filter(
        is_public=True,
        pk__in=StockRecord.objects.filter(num_in_stock__gt=0).values("product"),
    )


def lowest_price(product, request):
    """RESULT_PRICE for this shop: the cheapest stock record's price."""
    prices = [record.price for record in product.stockrecords.all()]
    return f"from {min(prices)}" if prices else None


def product_url(product, request):
    return f"/catalogue/{product.pk}/"
