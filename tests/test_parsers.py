"""Bodies the parsers cannot take are 400 JSON, never a 500 page."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_a_400_naming_the_problem(client, catalog, depth):
    body = '{"text": ' + "[" * depth + "]" * depth + "}"
    response = client.post(
        "/api/categories/suggest/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["code"] == "parse_error" and "nested too deeply" in data["message"]


def test_nesting_within_the_limit_is_a_validation_error(client, catalog):
    body = '{"text": ' + "[" * 50 + "]" * 50 + "}"
    response = client.post(
        "/api/categories/suggest/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["errors"]["text"]
