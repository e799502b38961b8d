"""
shop_search_evaluate on the demo catalog (240 products, tiny test models):
the report a shop reads, its numbers for the word channels (which the test
models do not affect), its own queries from a CSV, and that it writes
nothing.
"""

from __future__ import annotations

import json
import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from demo_shop.catalog.models import Product
from shop_search import evaluation
from shop_search.models import ImageVector, IndexState, SearchDocument
from tests import test_lexical

pytestmark = pytest.mark.django_db

#: The demo shop (240 products, indexed with the test models), loaded once.
demo_catalog = test_lexical.demo_catalog


def evaluate(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("shop_search_evaluate", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def table_rows(output: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(kind, language, channel): {"queries":, "recall@1":, ...}}``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("KIND"))
    header = [name.lower() for name in lines[start].split()]
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != len(header) or not cells[3].isdigit():
            continue
        row = dict(zip(header, cells, strict=True))
        rows[(row["kind"], row["language"], row["channel"])] = {
            name: float(row[name]) for name in header[3:]
        }
    return rows


def test_the_table_reports_recall_and_mrr_per_channel_and_language(demo_catalog):
    out, _err = evaluate("--sample", "20")
    rows = table_rows(out)
    for column in ("RECALL@1", "RECALL@10", "MRR"):
        assert column in out
    languages = {language for kind, language, _c in rows if kind == "name"}
    assert languages == {"en", "de", "fr", "es", "zh"}
    for channel in evaluation.CHANNELS:
        assert ("name", "de", channel) in rows
    assert rows[("name", "en", "fused")]["queries"] == 20
    assert rows[("identifier", "-", "fused")]["queries"] == 20
    assert rows[("typo", "en", "fused")]["queries"] == 20
    # The word channels do not depend on the random test models.
    assert rows[("name", "en", "name")]["recall@1"] >= 0.95
    assert rows[("identifier", "-", "identifier")]["recall@1"] == 1.0
    assert rows[("identifier", "-", "fused")]["recall@1"] == 1.0
    assert rows[("identifier", "-", "fused")]["mrr"] == 1.0
    assert rows[("typo", "en", "typo")]["recall@10"] >= 0.9
    visible = Product.objects.filter(is_published=True).count()
    assert f"{visible} visible product(s)" in out and "20 sampled" in out


def test_it_says_when_the_models_are_the_test_models(demo_catalog):
    out, _err = evaluate("--sample", "2", "--channels", "name")
    assert "tiny random-weight TEST models" in out
    assert "image and meaning channels" in out


def test_json_parses(demo_catalog):
    out, err = evaluate("--sample", "10", "--format", "json", "--k", "5")
    report = json.loads(out)  # the progress bar and warnings go to stderr
    assert "TEST models" in err
    assert report["model"] == "catalog.Product"
    visible = Product.objects.filter(is_published=True).count()
    assert report["products"] == visible and report["sampled"] == 10
    assert report["serving"]["test_models"] is True
    assert report["queries"] == {"name": 50, "typo": 10, "identifier": 10}
    row = next(
        r
        for r in report["results"]
        if (r["kind"], r["language"], r["channel"]) == ("identifier", None, "fused")
    )
    assert row["recall@1"] == row["recall@5"] == row["mrr"] == 1.0
    assert row["queries"] == 10


def test_the_shops_own_queries_from_a_csv(demo_catalog, tmp_path):
    first, second, third = demo_catalog[0], demo_catalog[1], demo_catalog[2]
    path = tmp_path / "queries.csv"
    path.write_text(
        "query,expected,language\n"
        f"{first.name},{first.sku},en\n"
        f'"{second.name_translations["de"]}",{second.pk},de\n'
        f"{third.sku.lower()},{third.sku}|{first.pk},\n",
        encoding="utf-8",
    )
    out, _err = evaluate("--sample", "0", "--queries", str(path), "--format", "json")
    report = json.loads(out)
    assert report["queries"] == {"csv": 3}
    rows = {
        (r["language"], r["channel"]): r
        for r in report["results"]
        if r["kind"] == "csv"
    }
    assert rows[("en", "name")]["recall@1"] == 1.0
    assert rows[("de", "name")]["queries"] == 1
    # The SKU finds one of its two expected products: half of them in the
    # top 10, the first one at rank 1.
    assert rows[(None, "identifier")]["recall@10"] == 0.5
    assert rows[(None, "identifier")]["mrr"] == 1.0


@pytest.mark.parametrize(
    "content, cause, fix",
    [
        (None, "Cannot read", "pass a UTF-8 CSV file with the columns query,expected"),
        (b"query,expected\n\xff\xfe,DEMO-0000\n", "Cannot read", "pass a UTF-8"),
        ("search,wanted\nred,DEMO-0000\n", "no query or expected column", "pass"),
        ("query,expected\nred dress,NO-SUCH-SKU\n", "'NO-SUCH-SKU'", "Use ident"),
        ("query,expected\nred dress,\n", "line 2: no expected", "list the product"),
        ("query,expected\n\t ,DEMO-0000\n", "line 2: The query is empty", "Fix"),
    ],
)
def test_a_bad_csv_is_a_command_error_naming_the_fix(
    demo_catalog, tmp_path, content, cause, fix
):
    path = tmp_path / "queries.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CommandError) as info:
        evaluate("--sample", "0", "--queries", str(path))
    assert cause in str(info.value) and fix in str(info.value)


def test_a_hidden_product_is_an_unknown_expected_product(
    demo_catalog, tmp_path, settings
):
    hidden = demo_catalog[5]
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "VISIBLE_PRODUCTS": "tests.test_evaluation.without_the_sixth",
    }
    path = tmp_path / "queries.csv"
    path.write_text(f"query,expected\n{hidden.name},{hidden.sku}\n")
    with pytest.raises(CommandError, match=hidden.sku):
        evaluate("--sample", "0", "--queries", str(path))
    out, _err = evaluate("--sample", "2", "--channels", "fused")
    assert "239 visible product(s)" in out


def without_the_sixth(request):
    return Product.objects.exclude(pk=Product.objects.order_by("pk")[5].pk)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "catalog.Nothing"], "app_label.Model"),
        (["--model", "catalog.Category"], "not searchable"),
        (["--channels", "name,colour"], "colour"),
        (["--k", "0"], "--k must be"),
        (["--sample", "0"], "--queries FILE.csv"),
    ],
)
def test_bad_options_are_command_errors(demo_catalog, args, message):
    with pytest.raises(CommandError, match=message):
        evaluate(*args)


def test_nothing_is_written(demo_catalog, tmp_path):
    def counts():
        return (
            Product.objects.count(),
            SearchDocument.objects.count(),
            IndexState.objects.count(),
            ImageVector.objects.count(),
            list(Product.objects.order_by("pk").values_list("updated_at", flat=True)),
        )

    # Even the serving models, recorded on a first search, are not kept.
    IndexState.objects.all().delete()
    before = counts()
    path = tmp_path / "queries.csv"
    path.write_text(f"query,expected\n{demo_catalog[0].name},{demo_catalog[0].sku}\n")
    evaluate("--sample", "5", "--queries", str(path))
    assert counts() == before


def test_the_typo_variants_are_seeded_and_one_edit_away():
    from rapidfuzz.distance import OSA

    name = "Black checked T-shirt"
    typos = [evaluation.one_typo(name, random.Random(seed)) for seed in range(30)]
    assert typos == [
        evaluation.one_typo(name, random.Random(seed)) for seed in range(30)
    ]
    assert all(OSA.distance(typo, name) == 1 for typo in typos)
    assert evaluation.one_typo("a b", random.Random(0)) is None


def test_recall_counts_at_most_k_expected_products():
    score = evaluation.Score()
    score.add(["1", "2", "3"], frozenset({"2", "3"}), k=10)
    score.add([], frozenset({"1"}), k=10)
    assert score.queries == 2 and score.answered == 1
    assert score.metrics() == {"recall@1": 0.0, "recall@k": 0.5, "mrr": 0.25}


def test_verbosity_2_lists_the_queries_search_misses(demo_catalog, tmp_path):
    product = demo_catalog[0]
    path = tmp_path / "queries.csv"
    path.write_text(
        f"query,expected\nqwzx vbnm,{product.sku}\n{product.sku},{product.sku}\n"
    )
    out, _err = evaluate("--sample", "0", "--queries", str(path), "-v", "2")
    assert "Not in the fused top 10 (1):" in out
    assert "qwzx vbnm" in out.split("Not in the fused top 10")[1]
