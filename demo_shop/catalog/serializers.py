from rest_framework import serializers

from shop_search.api.serializers import image_url

from .models import Product


class ProductSerializer(serializers.ModelSerializer):
    """How the demo's products appear in search results."""

    # Fetched for all the results at once (see shop_search.api.views).
    prefetch_related = ["category"]

    category = serializers.StringRelatedField()
    image = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = [
            "id",
            "sku",
            "name",
            "name_translations",
            "price",
            "currency",
            "category",
            "colour",
            "in_stock",
            "image",
            "url",
        ]

    def get_image(self, obj: Product) -> str | None:
        return image_url(obj, self.context.get("request"))

    def get_url(self, obj: Product) -> str:
        request = self.context.get("request")
        url = obj.get_absolute_url()
        return request.build_absolute_uri(url) if request else url
