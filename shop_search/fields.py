"""The embedding column: pgvector ``halfvec`` (default) or ``vector``."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.core import checks
from django.db import models
from pgvector import HalfVector, Vector
from pgvector.django import HnswIndex

__all__ = ["EmbeddingField", "EmbeddingIndex", "STORAGE_TYPES"]

#: storage type -> (pgvector value class, HNSW inner-product operator class)
STORAGE_TYPES = {
    "halfvec": (HalfVector, "halfvec_ip_ops"),
    "vector": (Vector, "vector_ip_ops"),
}


class EmbeddingField(models.Field):
    """
    An L2-normalized embedding stored with pgvector.

    ``storage="halfvec"`` (the default) keeps 2 bytes per dimension, half of
    ``"vector"``, with no measurable loss for cosine ranking of CLIP vectors.
    Python values are ``numpy.ndarray`` of float32 (or ``None``).
    """

    description = "pgvector embedding"
    empty_strings_allowed = False

    def __init__(
        self, *args: Any, dimensions: int = 512, storage: str = "halfvec", **kwargs: Any
    ) -> None:
        self.dimensions = dimensions
        self.storage = storage
        super().__init__(*args, **kwargs)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        if self.storage not in STORAGE_TYPES:
            errors.append(
                checks.Error(
                    f"EmbeddingField storage must be one of {sorted(STORAGE_TYPES)}, "
                    f"not {self.storage!r}.",
                    obj=self,
                    id="shop_search.E020",
                )
            )
        if not isinstance(self.dimensions, int) or not 0 < self.dimensions <= 4000:
            errors.append(
                checks.Error(
                    "EmbeddingField dimensions must be an integer from 1 to 4000 "
                    "(pgvector's HNSW limit for halfvec).",
                    obj=self,
                    id="shop_search.E021",
                )
            )
        return errors

    def deconstruct(self) -> tuple[Any, Any, Any, Any]:
        name, path, args, kwargs = super().deconstruct()
        if self.dimensions != 512:
            kwargs["dimensions"] = self.dimensions
        if self.storage != "halfvec":
            kwargs["storage"] = self.storage
        return name, path, args, kwargs

    @property
    def value_class(self) -> type:
        return STORAGE_TYPES[self.storage][0]

    @property
    def opclass(self) -> str:
        return STORAGE_TYPES[self.storage][1]

    def db_type(self, connection: Any) -> str:
        return f"{self.storage}({self.dimensions})"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return self.to_python(value)

    def to_python(self, value: Any) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = self.value_class._from_db(value)
        if isinstance(value, (HalfVector, Vector)):
            value = value.to_numpy()
        return np.asarray(value, dtype=np.float32)

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        return self.value_class(np.asarray(value, dtype=np.float32)).to_text()

    def value_to_string(self, obj: Any) -> str:
        value = self.get_prep_value(self.value_from_object(obj))
        return "" if value is None else value


class EmbeddingIndex(HnswIndex):
    """
    HNSW index for inner-product search on an :class:`EmbeddingField`.

    The operator class follows the field's storage (``halfvec_ip_ops`` or
    ``vector_ip_ops``), so the index needs only a name and the field::

        EmbeddingIndex(name="%(app_label)s_%(class)s_emb", fields=["vector"])

    Vectors are L2-normalized, so inner product ranks exactly like cosine and
    is cheaper to compute.
    """

    def create_sql(
        self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any
    ):
        field = model._meta.get_field(self.fields[0].lstrip("-"))
        index = self.clone()
        index.opclasses = (field.opclass,)
        return super(EmbeddingIndex, index).create_sql(
            model, schema_editor, using, **kwargs
        )
