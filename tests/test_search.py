"""The read path: rankings, filters, pages, cache, cutoff."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.base import ContentFile

from demo_shop.catalog.demo_data import generate_catalog
from demo_shop.catalog.models import Product
from shop_search import search
from shop_search.encoders import get_text_encoder
from shop_search.exceptions import ImageError
from shop_search.models import ImageVector
from shop_search.testing import index_view

from .conftest import QUERIES, synthetic_products

pytestmark = pytest.mark.django_db


def _exact_ranking(queryset, vector):
    keys = {str(pk): pk for pk in queryset.values_list("pk", flat=True)}
    rows = [
        (keys[key], v)
        for key, v in ImageVector.objects.filter(object_pk__in=keys).values_list(
            "object_pk", "vector"
        )
    ]
    scores = np.array([v for _, v in rows]) @ vector
    return [rows[i][0] for i in np.argsort(-scores)]


def test_filtered_search_returns_full_pages_even_for_a_rare_filter(category):
    synthetic_products(category, 3000, rare_every=150)  # 20 rare: 0.67%
    rare = Product.objects.filter(colour="rare")
    assert rare.count() == 20
    query = index_view(Product.objects.get(sku="S-0-7")).vector
    page = search.nearest(rare, query, limit=10)
    assert len(page) == 10
    assert all(hit.object.colour == "rare" for hit in page)
    # Exact when PostgreSQL scans the 20 rows; HNSW (approximate) when it uses
    # the index: either way nearly the same ten.
    exact = _exact_ranking(rare, query)[:10]
    assert len({hit.object.pk for hit in page} & set(exact)) >= 8
    last = search.nearest(rare, query, limit=10, offset=10)
    assert len(last) == 10 and not last.has_more
    assert search.nearest(rare, query, limit=10, offset=20).hits == []


def test_price_filter_with_many_matches_ranks_like_an_exact_scan(category):
    synthetic_products(category, 2000)
    cheap = Product.objects.filter(price__lte=10)  # 10%
    query = index_view(Product.objects.get(sku="S-0-3")).vector
    page = search.nearest(cheap, query, limit=20)
    assert len(page) == 20 and all(hit.object.price <= 10 for hit in page)
    exact = _exact_ranking(cheap, query)[:20]
    recall = len({hit.object.pk for hit in page} & set(exact)) / 20
    assert recall >= 0.9
    scores = [hit.score for hit in page]
    assert scores == sorted(scores, reverse=True)


def test_pages_are_stable_and_do_not_overlap(category):
    synthetic_products(category, 500)
    query = index_view(Product.objects.get(sku="S-0-1")).vector
    everything = [
        h.object.pk for h in search.nearest(Product.objects.all(), query, limit=30)
    ]
    pages = [
        [
            h.object.pk
            for h in search.nearest(Product.objects.all(), query, limit=10, offset=o)
        ]
        for o in (0, 10, 20)
    ]
    assert sum(pages, []) == everything
    assert len(set(everything)) == 30


def _drawn_products(category, count=12):
    products = []
    for item in list(generate_catalog())[:: 240 // count][:count]:
        product = Product(category=category, **item["product"])
        product.image.save(f"{product.sku}.png", ContentFile(item["image"]), save=False)
        product.save()
        products.append(product)
    return products


@pytest.mark.django_db(transaction=True)
def test_a_products_own_image_finds_it_first(category):
    products = _drawn_products(category)
    for product in products[:4]:
        with product.image.open("rb") as fh:
            page = search.search_image(Product.objects.all(), fh.read(), limit=3)
        assert page.hits[0].object.pk == product.pk
        assert page.hits[0].score == pytest.approx(1.0, abs=0.01)


@pytest.mark.django_db(transaction=True)
def test_similar_products_exclude_the_product(category):
    products = _drawn_products(category)
    product = Product.objects.get(pk=products[0].pk)
    page = search.similar_products(Product.objects.all(), product, limit=20)
    pks = [hit.object.pk for hit in page]
    assert product.pk not in pks
    assert len(pks) == len(products) - 1


@pytest.mark.django_db(transaction=True)
def test_text_queries_in_six_languages_answer(category):
    _drawn_products(category, 6)
    for query in QUERIES:
        page = search.search_text(Product.objects.all(), query, limit=3)
        assert len(page) == 3


def test_repeated_query_is_not_encoded_again(category, monkeypatch):
    synthetic_products(category, 50)
    # The noise floors are measured once per process with their own
    # queries; measure them before counting this query's encodings.
    search.search_text(Product.objects.all(), "warm up")
    search.query_cache.clear()
    encoder = get_text_encoder()
    calls = []
    original = encoder.encode_texts
    monkeypatch.setattr(
        encoder, "encode_texts", lambda t: calls.append(t) or original(t)
    )
    for _ in range(3):
        search.search_text(Product.objects.all(), "blue  sneakers ")
    search.search_text(Product.objects.all(), "blue sneakers")  # same once normalised
    assert calls == [["blue sneakers"]]


def test_min_score_drops_weak_results(category, settings):
    synthetic_products(category, 200)
    query = index_view(Product.objects.get(sku="S-0-5")).vector
    everything = search.nearest(Product.objects.all(), query, limit=50)
    cutoff = everything.hits[9].score
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "MIN_SCORE": cutoff}
    page = search.nearest(Product.objects.all(), query, limit=50)
    assert len(page) == 10 and not page.has_more
    assert min(hit.score for hit in page) >= cutoff


def test_vectors_of_another_model_are_never_compared(category):
    synthetic_products(category, 30)
    query = index_view(Product.objects.get(sku="S-0-1")).vector
    old = Product.objects.filter(sku__in=["S-0-1", "S-0-2"])
    ImageVector.objects.filter(object_pk__in=[str(p.pk) for p in old]).update(
        image_model="old-model"
    )
    pks = {h.object.sku for h in search.nearest(Product.objects.all(), query, limit=50)}
    assert len(pks) == 28 and "S-0-1" not in pks


@pytest.mark.parametrize(
    ("query", "code"),
    [("", "query_empty"), ("  \x00\t ", "query_empty"), ("x" * 201, "query_too_long")],
)
def test_bad_queries_are_refused(query, code):
    with pytest.raises(search.QueryError) as info:
        search.normalize_query(query)
    assert info.value.code == code


def test_bad_limits_are_refused(category):
    with pytest.raises(search.QueryError):
        search.nearest(Product.objects.all(), np.ones(512), limit=0)
    with pytest.raises(search.QueryError):
        search.nearest(Product.objects.all(), np.ones(512), limit=101)


def test_an_unreadable_upload_is_an_image_error():
    with pytest.raises(ImageError):
        search.search_image(Product.objects.all(), b"<html>")


def _force_index(cursor_sql="SET enable_seqscan = off"):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(cursor_sql)


def test_hnsw_iterative_scan_serves_filtered_pages(category, settings):
    synthetic_products(category, 3000, rare_every=30)  # 100 rare: 3.3%
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 0}
    _force_index()  # small tables would otherwise be scanned exactly
    rare = Product.objects.filter(colour="rare")
    query = index_view(Product.objects.get(sku="S-0-11")).vector
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        cursor.execute(
            "EXPLAIN SELECT id FROM shop_search_imagevector "
            "ORDER BY vector <#> %s::halfvec(512) LIMIT 10",
            [ImageVector._meta.get_field("vector").get_prep_value(query)],
        )
        explain = " ".join(row[0] for row in cursor.fetchall())
    assert "shop_search_vector_hnsw" in explain  # the HNSW index is used
    page = search.nearest(rare, query, limit=25)
    assert len(page) == 25 and not page.exact
    assert all(hit.object.colour == "rare" for hit in page)
    exact = _exact_ranking(rare, query)[:25]
    # recall >= 0.88: the rolled-back rows of earlier tests stay in the HNSW
    # graph until a VACUUM, which tests in transactions never get.
    assert len({h.object.pk for h in page} & set(exact)) >= 22


def test_text_search_serves_both_vector_channels_from_their_indexes(category, settings):
    """The text search sends its query vector once per channel and orders by
    the selected distance's name: PostgreSQL still serves the image and the
    meaning channel from their HNSW indexes."""
    from django.db import connection, transaction

    synthetic_products(category, 300)
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 0}
    for table in ("shop_search_imagevector", "shop_search_searchdocument"):
        _force_index(f"ANALYZE {table}")
    # 300 vectors would be sorted; an index scan must be able to order them.
    _force_index("SET enable_sort = off")
    statements = []

    def capture(execute, sql, params, many, context):
        if sql.startswith("SELECT set_config"):
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        search.search_text(Product.objects.all(), "red dress")
    sql, params = next(s for s in statements if "'meaning'" in s[0])
    vectors = [p for p in params if isinstance(p, str) and p.startswith("[")]
    assert len(vectors) == 2  # one for the image channel, one for meaning
    settings_sql, body = sql.split("; ", 1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(settings_sql, params[:3])
        cursor.execute("EXPLAIN " + body, params[3:])
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "shop_search_vector_hnsw" in plan
    assert "shop_search_document_vec" in plan


def test_an_index_scan_that_gives_up_is_refilled_exactly(category, settings):
    synthetic_products(category, 3000, rare_every=300)  # 10 rare: 0.33%
    _force_index()
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "MAX_SCAN_TUPLES": 50,
        "EF_SEARCH": 10,
        "EXACT_SCAN_THRESHOLD": 0,
    }
    rare = Product.objects.filter(colour="rare")
    query = index_view(Product.objects.get(sku="S-0-5")).vector
    page = search.nearest(rare, query, limit=10)
    # The iterative scan stops early: whichever plan PostgreSQL then picks
    # (the refill's exact scan, or ranking the ten candidates' vectors
    # itself), the page is full and exact.
    assert [h.object.pk for h in page] == _exact_ranking(rare, query)[:10]


def test_few_candidates_can_be_ranked_exactly(category, settings):
    synthetic_products(category, 1000, rare_every=50)  # 20 rare
    # The statistics autovacuum keeps: without them the rows earlier tests
    # rolled back inflate the estimate of vectors per product.
    _force_index("ANALYZE catalog_product")
    _force_index("ANALYZE shop_search_imagevector")
    _force_index()
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 100}
    rare = Product.objects.filter(colour="rare")
    query = index_view(Product.objects.get(sku="S-0-3")).vector
    page = search.nearest(rare, query, limit=10)
    assert page.exact
    assert [h.object.pk for h in page] == _exact_ranking(rare, query)[:10]
    everything = search.nearest(Product.objects.all(), query, limit=10)
    assert not everything.exact  # over the threshold: the HNSW index


def test_the_exact_scan_threshold_counts_image_vectors(category, settings):
    """A product with three images costs the exact scan three vectors: 50
    candidates with 150 vectors go through the index under a threshold of
    100, and are ranked exactly under 200."""
    from django.contrib.contenttypes.models import ContentType

    products = synthetic_products(category, 1000, rare_every=20)  # 50 rare
    content_type = ContentType.objects.get_for_model(Product)
    first = {
        row.object_pk: row
        for row in ImageVector.objects.filter(content_type=content_type)
    }
    rng = np.random.default_rng(5)
    extra = []
    for product in products:
        row = first[str(product.pk)]
        for position in (1, 2):
            moved = row.vector + 0.2 * rng.normal(size=512) / 22
            extra.append(
                ImageVector(
                    content_type=content_type,
                    object_pk=row.object_pk,
                    group_pk=row.group_pk,
                    image_model=row.image_model,
                    source=f"gallery:{position}",
                    position=position,
                    vector=moved / np.linalg.norm(moved),
                )
            )
    ImageVector.objects.bulk_create(extra, batch_size=1000)
    _force_index("ANALYZE catalog_product")  # the statistics autovacuum keeps
    _force_index("ANALYZE shop_search_imagevector")
    rare = Product.objects.filter(colour="rare")
    query = index_view(Product.objects.get(sku="S-0-20")).vector
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 100}
    through_index = search.nearest(rare, query, limit=10)
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "EXACT_SCAN_THRESHOLD": 200}
    exact = search.nearest(rare, query, limit=10)
    assert not through_index.exact and exact.exact
    assert len(through_index) == len(exact) == 10
    assert exact.hits[0].object.sku == "S-0-20"
    assert all(hit.object.colour == "rare" for hit in through_index)
    # A photo query takes every image's vector for each family it wants; the
    # text search's image channel the first and half the others (2 of 3).
    from shop_search.estimates import channel_vector_depth, vector_depth

    model = ImageVector.objects.values_list("image_model", flat=True).first()
    assert vector_depth(rare, model, 100) == 300
    assert channel_vector_depth(rare, model, 100) == 200


def test_a_queryset_given_another_query_is_ranked_by_it(category):
    """Assigning a queryset another query between searches (as some
    filtering libraries do) ranks by the new one: nothing the first search
    built is kept on the shop's queryset."""
    synthetic_products(category, 40, rare_every=10)  # 4 rare
    query = index_view(Product.objects.get(sku="S-0-3")).vector
    candidates = Product.objects.all()
    assert len(search.nearest(candidates, query, limit=10)) == 10
    candidates.query = Product.objects.filter(colour="rare").query
    page = search.nearest(candidates, query, limit=10)
    assert len(page) == 4 and all(hit.object.colour == "rare" for hit in page)


def test_a_long_lived_queryset_follows_each_requests_time_zone(category):
    """A site may pass the same queryset object to every search (a
    module-level VISIBLE_PRODUCTS); its SQL depends on the active time zone,
    so nothing built for one search may be reused by the next."""
    import datetime

    from django.utils import timezone

    synthetic_products(category, 40, rare_every=10)
    late = datetime.datetime(2026, 1, 1, 23, 30, tzinfo=datetime.UTC)
    Product.objects.update(created_at=late + datetime.timedelta(days=1))
    Product.objects.filter(sku="S-0-3").update(created_at=late)
    query = index_view(Product.objects.get(sku="S-0-3")).vector
    made_by_new_year = Product.objects.filter(
        created_at__date__lte=datetime.date(2026, 1, 1)
    )
    with timezone.override("Pacific/Auckland"):  # 2 January there
        assert len(search.nearest(made_by_new_year, query, limit=10)) == 0
    with timezone.override("UTC"):
        page = search.nearest(made_by_new_year, query, limit=10)
        assert [hit.object.sku for hit in page] == ["S-0-3"]
