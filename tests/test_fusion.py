"""Reciprocal rank fusion of the text search's channels (no database)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shop_search import fusion
from shop_search.lexical import Channels

CHANNELS = ("name", "meaning", "image")


def _cut(hits: dict[str, list[tuple[str, float]]], depth: int) -> Channels:
    """The channels as a search at ``depth`` ranks them: each cut there."""
    return Channels(hits={channel: ranked[:depth] for channel, ranked in hits.items()})


@st.composite
def channel_hits(draw):
    """One to three channels of 1 to 450 of 600 products each, best first
    (most longer than a depth tier, so that the cuts matter)."""
    hits = {}
    for channel in draw(st.sets(st.sampled_from(CHANNELS), min_size=1)):
        order = draw(st.permutations(range(600)))
        length = draw(st.one_of(st.integers(1, 99), st.integers(100, 450)))
        ranked = order[:length]
        hits[channel] = [(str(key), 1.0 - i / 1000) for i, key in enumerate(ranked)]
    return hits


def test_depth_doubles_from_the_channel_depth_up_to_the_count_cap():
    # CHANNEL_DEPTH 100, COUNT_CAP 1000 (the defaults)
    assert fusion.depth_for(24) == 100
    assert fusion.depth_for(100) == 100
    assert fusion.depth_for(101) == 200
    assert fusion.depth_for(700) == 800
    assert fusion.depth_for(5000) == 1000


@settings(max_examples=60, deadline=None)
@given(channel_hits())
def test_deeper_rankings_keep_the_shallower_order(hits):
    """Page 1 is cut from a ranking at depth 100, page 5 from one at 200 or
    400: every product the shallower ranking holds keeps its place, so
    pages neither repeat nor skip products."""
    shallow = list(fusion.fuse(_cut(hits, 100), (-1.0, -1.0)))
    for depth in (200, 400):
        deeper = list(fusion.fuse(_cut(hits, depth), (-1.0, -1.0)))
        assert deeper[: len(shallow)] == shallow


def test_products_found_by_more_channels_rank_higher():
    hits = {
        "name": [("a", 0.9), ("b", 0.8)],
        "meaning": [("b", 0.7), ("c", 0.6)],
    }
    fused = fusion.fuse(Channels(hits=hits), (-1.0, -1.0))
    assert list(fused)[0] == "b"  # second by name, first by meaning
    assert fused["b"][1] == ["name", "meaning"]


def test_an_identifier_hit_outweighs_the_best_name_hit():
    hits = {"name": [("shirt", 0.9)], "identifier": [("sku-match", 1.0)]}
    assert list(fusion.fuse(Channels(hits=hits), (-1.0, -1.0))) == [
        "sku-match",
        "shirt",
    ]


def test_hits_under_the_noise_floor_count_but_do_not_say_they_matched():
    hits = {"image": [("near", 0.31), ("far", 0.12)], "name": [("far", 0.5)]}
    fused = fusion.fuse(Channels(hits=hits), (0.2, 0.2))
    assert fused["near"][1] == ["image"]
    assert fused["far"][1] == ["name"]  # its image similarity is noise
    assert fused["far"][0] > fused["near"][0]  # both ranks still add up


def test_products_past_the_first_depth_are_ranked_by_their_ranks():
    """Deep pages (offset 300, say) are ordered by rank too, not by key."""
    ranked = [(str(1000 - rank), 0.5) for rank in range(400)]
    fused = fusion.fuse(Channels(hits={"name": ranked}), (-1.0, -1.0))
    assert list(fused) == [key for key, _score in ranked]
