"""
Serializer fields whose limits come from SHOP_SEARCH at call time, and whose
OpenAPI description says exactly what they accept (so that every request the
schema allows is served).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from ..conf import shop_search_settings
from ..vectors import VISIBLE_PATTERN

__all__ = ["QueryField", "LimitField", "UploadField", "StrictIntegerField"]


class QueryField(serializers.CharField):
    """A search text: at most ``MAX_QUERY_LENGTH`` characters, something visible."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Not a valid string.")
        value = super().to_internal_value(data)
        limit = shop_search_settings.MAX_QUERY_LENGTH
        if len(value) > limit:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {limit} characters."
            )
        return value


class LimitField(serializers.IntegerField):
    """Results per page: 1 to ``MAX_LIMIT``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        value = super().to_internal_value(data)
        maximum = shop_search_settings.MAX_LIMIT
        if value > maximum:
            raise serializers.ValidationError(
                f"Ensure this value is at most {maximum}."
            )
        return value


class StrictIntegerField(serializers.IntegerField):
    """An integer in a JSON body: "5", 5.0 and true are not integers there."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("A valid integer is required.")
        return super().to_internal_value(data)


class UploadField(serializers.FileField):
    """An uploaded image (multipart)."""


class QueryFieldExtension(OpenApiSerializerFieldExtension):
    target_class = QueryField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": shop_search_settings.MAX_QUERY_LENGTH,
            "pattern": VISIBLE_PATTERN,
            "description": self.target.help_text or "",
        }


class LimitFieldExtension(OpenApiSerializerFieldExtension):
    target_class = LimitField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {
            "type": "integer",
            "minimum": 1,
            "maximum": shop_search_settings.MAX_LIMIT,
            "description": self.target.help_text or "",
        }


class UploadFieldExtension(OpenApiSerializerFieldExtension):
    target_class = UploadField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}
