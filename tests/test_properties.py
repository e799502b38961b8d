"""Property-based tests (hypothesis) for the image loader and the query normaliser."""

from __future__ import annotations

import io
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shop_search.exceptions import ImageError
from shop_search.images import load_image
from shop_search.search import QueryError, normalize_query

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(st.binary(max_size=4096))
def test_any_bytes_load_or_refuse_with_a_code(data):
    try:
        image = load_image(data)
    except ImageError as exc:
        assert exc.code.startswith("image_") and exc.message
    else:
        assert image.mode == "RGB"


def _png(width, height, mode):
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@FAST
@given(
    data=st.builds(
        _png,
        st.integers(1, 300),
        st.integers(1, 300),
        st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]),
    ),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
)
def test_damaged_pngs_never_escape_as_other_errors(data, cut, flips):
    damaged = bytearray(data[: max(0, len(data) - cut)])
    for at, value in flips:
        if damaged:
            damaged[at % len(damaged)] = value
    try:
        image = load_image(bytes(damaged))
    except ImageError:
        return
    assert image.mode == "RGB" and max(image.size) <= 768


@FAST
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(1, 8))
def test_size_and_orientation_are_preserved_up_to_the_working_size(w, h, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.new("RGB", (w, h), "red").save(buffer, format="JPEG", exif=exif)
    if max(w, h) > 10 * min(w, h):
        with pytest.raises(ImageError) as info:
            load_image(buffer.getvalue())
        assert info.value.code == "image_extreme_aspect"
        return
    image = load_image(buffer.getvalue())
    expected = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    assert image.info["original_size"] == expected
    scale = min(1.0, 768 / max(expected))
    assert abs(image.size[0] - expected[0] * scale) <= 2
    assert abs(image.size[1] - expected[1] * scale) <= 2


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_normalised_queries_are_clean_or_refused(text):
    try:
        query = normalize_query(text)
    except QueryError as exc:
        assert exc.code in ("query_empty", "query_too_long")
        return
    assert query == query.strip() and "  " not in query
    assert 0 < len(query) <= 200
    assert unicodedata.is_normalized("NFC", query)
    # Control and format characters go; those outside the BMP stay (tag
    # characters spell flag emoji), as normalize_query says.
    assert not any(
        unicodedata.category(ch) in ("Cc", "Cf") and ord(ch) < 0x10000 for ch in query
    )
    assert normalize_query(query) == query  # idempotent


def test_a_query_the_schema_allows_is_not_refused_for_its_length():
    """Found by a hostile client: 150 of U+1D15E pass the schema's maxLength
    of 200, and NFC makes each two characters."""
    query = normalize_query("\U0001d15e" * 150)
    assert 0 < len(query) <= 200 and unicodedata.is_normalized("NFC", query)
    with pytest.raises(QueryError) as refused:
        normalize_query("x" * 201)
    assert refused.value.code == "query_too_long"
    # What normalising removes or joins does not count against the limit.
    assert normalize_query("dress    " * 30) == " ".join(["dress"] * 30)  # spaces
    assert normalize_query("\u1100\u1161" * 150) == "\uac00" * 150  # NFC joins


@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=50))
def test_visible_text_survives_normalisation(word):
    assert normalize_query(f"  {word}\t\n") == unicodedata.normalize("NFC", word)


@pytest.mark.parametrize("text", ["\u200b", "\x00\x01", "\ufeff \u2028", "\u202e"])
def test_invisible_only_queries_are_empty(text):
    with pytest.raises(QueryError) as info:
        normalize_query(text)
    assert info.value.code == "query_empty"
