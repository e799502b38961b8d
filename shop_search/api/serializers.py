"""Serializers for the search API: request parameters and results."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .fields import LimitField, QueryField, StrictIntegerField, UploadField


class ProductSerializer(serializers.Serializer):
    """
    The default product representation: ``id``, ``name`` (``str(product)``)
    and ``image`` (absolute URL). Name your own serializer class in
    ``SHOP_SEARCH['PRODUCT_SERIALIZER']`` to show prices, links and more.
    """

    id = serializers.SerializerMethodField()
    name = serializers.SerializerMethodField()
    image = serializers.SerializerMethodField()

    def get_id(self, obj: Any) -> Any:
        return obj.pk

    def get_name(self, obj: Any) -> str:
        return str(obj)

    def get_image(self, obj: Any) -> str | None:
        return image_url(obj, self.context.get("request"))


def image_url(obj: Any, request: Any = None) -> str | None:
    """Absolute URL of a product's search image, or None."""
    from ..registry import declaration

    file = declaration(type(obj)).primary_image(obj)
    if not file:
        return None
    try:
        url = file.url
    except ValueError:
        return None
    return request.build_absolute_uri(url) if request is not None else url


class PageParamsSerializer(serializers.Serializer):
    limit = LimitField(required=False, help_text="Results per page (1 to MAX_LIMIT).")
    offset = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=10_000,
        default=0,
        help_text="Results to skip.",
    )


class TextSearchParamsSerializer(PageParamsSerializer):
    q = QueryField(help_text="The query, in any of the text model's 50+ languages.")
    sort = serializers.CharField(
        required=False,
        default="relevance",
        max_length=50,
        help_text='"relevance" (default) or an order the shop declares in '
        'SHOP_SEARCH["SORTS"] (default "price" and "-price"); another value is 400.',
    )
    facets = serializers.BooleanField(
        required=False,
        default=False,
        help_text="true: also count the matching products per category.",
    )


class SuggestParamsSerializer(serializers.Serializer):
    q = QueryField(help_text="What the shopper has typed so far.")
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=20, default=8
    )


class ImageSearchSerializer(PageParamsSerializer):
    image = UploadField(
        help_text="A JPEG, PNG, WebP or GIF photo.", allow_empty_file=True
    )
    group = serializers.ChoiceField(
        choices=["none", "look"],
        default="none",
        required=False,
        help_text='"look": detect the items in the photo (shop the look) and '
        "return products per item, plus the whole-image results.",
    )


class CategorySuggestTextSerializer(serializers.Serializer):
    text = QueryField(help_text="A product name or query, in any language.")
    top = StrictIntegerField(required=False, min_value=1, max_value=1000, default=5)


class CategorySuggestImageSerializer(serializers.Serializer):
    image = UploadField(help_text="A product photo.", allow_empty_file=True)
    top = serializers.IntegerField(
        required=False, min_value=1, max_value=1000, default=5
    )


class HitSerializer(serializers.Serializer):
    score = serializers.FloatField(
        help_text="Text search: the fused score (higher is better). Image "
        "search: the cosine similarity, -1 to 1."
    )
    matched = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text='Text search: the channels that found it: "identifier", '
        '"name", "typo", "some_words", "meaning", "image".',
    )
    product = serializers.DictField(
        help_text="The product, as PRODUCT_SERIALIZER shows it."
    )


class CategorySerializer(serializers.Serializer):
    id = serializers.JSONField()
    name = serializers.CharField()
    probability = serializers.FloatField()


class CategorySuggestResultSerializer(serializers.Serializer):
    categories = CategorySerializer(many=True)


class FacetSerializer(serializers.Serializer):
    id = serializers.JSONField()
    name = serializers.CharField()
    count = serializers.IntegerField()


class SearchResultSerializer(serializers.Serializer):
    results = HitSerializer(many=True)
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField(allow_null=True)
    categories = CategorySerializer(many=True, required=False)
    count = serializers.IntegerField(
        required=False, help_text="Text search: the matching products."
    )
    count_exact = serializers.BooleanField(
        required=False,
        help_text='false: there are more than count (COUNT_CAP), show it as "1000+".',
    )
    no_match = serializers.BooleanField(
        required=False,
        help_text="true: nothing matches the query; results are empty and "
        "categories suggest where to look.",
    )
    facets = FacetSerializer(many=True, required=False)


class SuggestionSerializer(serializers.Serializer):
    text = serializers.CharField()


class SuggestedCategorySerializer(serializers.Serializer):
    id = serializers.JSONField()
    name = serializers.CharField()


class SuggestResultSerializer(serializers.Serializer):
    products = SuggestionSerializer(many=True)
    categories = SuggestedCategorySerializer(many=True)


class LookItemSerializer(serializers.Serializer):
    box = serializers.ListField(
        child=serializers.IntegerField(), help_text="[x0, y0, x1, y1] in image pixels."
    )
    label = serializers.CharField()
    category = CategorySerializer()
    score = serializers.FloatField()
    results = HitSerializer(many=True)


class LookResultSerializer(serializers.Serializer):
    image_size = serializers.ListField(child=serializers.IntegerField())
    items = LookItemSerializer(many=True)
    whole_image = SearchResultSerializer()


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    errors = serializers.DictField(required=False)
