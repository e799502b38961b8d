from django.db import models

from shop_search.models import SearchableProduct


class Category(models.Model):  # noqa: DJ008 - on purpose
    # No __str__, as in many frameworks' abstract bases: names must still read.
    name = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )


class Product(SearchableProduct):
    title = models.CharField(max_length=200)
    upc = models.CharField(max_length=64, blank=True)
    categories = models.ManyToManyField(Category, related_name="products")
    image = models.ImageField(upload_to="framework/", blank=True)

    search_image_field = "image"
    search_text_fields = ["title", "upc"]
    search_category_field = "categories"

    class Meta(SearchableProduct.Meta):
        pass

    def __str__(self) -> str:
        return self.title


class StockRecord(models.Model):  # noqa: DJ008
    product = models.ForeignKey(
        Product, on_delete=models.CASCADE, related_name="stockrecords"
    )
    partner = models.CharField(max_length=50)
    price = models.DecimalField(max_digits=10, decimal_places=2)


def lowest_price(product, request):
    """RESULT_PRICE for this shop: the cheapest stock record's price."""
    prices = [record.price for record in product.stockrecords.all()]
    return f"from {min(prices)}" if prices else None


def product_url(product, request):
    return f"/catalogue/{product.pk}/"
