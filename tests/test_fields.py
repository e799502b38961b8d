"""The embedding field and index as migrations and the database see them."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from demo_shop.catalog.models import Product
from shop_search.fields import EmbeddingField, EmbeddingIndex
from shop_search.models import ImageVector


def test_deconstruct_emits_only_non_default_arguments():
    assert EmbeddingField().deconstruct()[3] == {}
    kwargs = EmbeddingField(dimensions=768, storage="vector").deconstruct()[3]
    assert kwargs == {"dimensions": 768, "storage": "vector"}


def test_bad_storage_is_a_check_error():
    field = EmbeddingField(storage="float")
    field.set_attributes_from_name("e")
    field.model = Product
    assert [e.id for e in field.check()] == ["shop_search.E020"]


@pytest.mark.django_db
def test_migrated_column_and_hnsw_index():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'shop_search_imagevector'::regclass "
            "AND attname = 'vector'"
        )
        assert cursor.fetchone()[0] == "halfvec(512)"
        cursor.execute(
            "SELECT indexdef FROM pg_indexes "
            "WHERE indexname = 'shop_search_vector_hnsw'"
        )
        definition = cursor.fetchone()[0]
    assert "USING hnsw" in definition and "halfvec_ip_ops" in definition


@pytest.mark.django_db
def test_vector_storage_uses_vector_ops():
    index = EmbeddingIndex(name="x_emb", fields=["vector"])
    field = ImageVector._meta.get_field("vector")
    field_vector = EmbeddingField(storage="vector")
    assert field.opclass == "halfvec_ip_ops" and field_vector.opclass == "vector_ip_ops"
    with connection.schema_editor(collect_sql=True) as editor:
        sql = str(index.create_sql(ImageVector, editor))
    assert "halfvec_ip_ops" in sql


def test_values_round_trip_as_float32_arrays():
    field = EmbeddingField(dimensions=3)
    text = field.get_prep_value(np.array([0.5, -0.25, 1.0]))
    value = field.to_python(text)
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, [0.5, -0.25, 1.0])
    assert field.to_python(None) is None and field.get_prep_value(None) is None
