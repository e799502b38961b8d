from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop_search import evaluation

from ._common import progress_bar, selected_models

#: Missed queries listed at --verbosity 2 (--format json lists them all).
MISSES_SHOWN = 50


class Command(BaseCommand):
    help = (
        "Measure how well search finds your products: each sampled product's "
        "names (per language), a one-typo variant and its identifiers, plus "
        "your own queries (--queries FILE.csv), scored by recall@1, recall@k "
        "and MRR per channel and fused. Reads only; writes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model",
            metavar="APP_LABEL.MODEL",
            help="The searchable model to evaluate (default: PRODUCT_MODEL).",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=200,
            metavar="N",
            help="Products whose names and identifiers become queries, evenly "
            "spaced by pk (default 200; 0: only --queries).",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            help="Seed of the one-typo variants (default 0).",
        )
        parser.add_argument(
            "--k", type=int, default=10, help="Depth of recall@k and MRR (default 10)."
        )
        parser.add_argument(
            "--channels",
            default=",".join(evaluation.CHANNELS),
            help=f"Comma-separated rankings to score "
            f"(default: {','.join(evaluation.CHANNELS)}).",
        )
        parser.add_argument(
            "--queries",
            metavar="FILE.csv",
            help="Your own queries: a CSV with the columns query,expected "
            "(product identifiers or pks separated by |) and optionally language.",
        )
        parser.add_argument(
            "--format", choices=["table", "json"], default="table", help="Output."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from shop_search.conf import shop_search_settings
        from shop_search.switching import serving

        k, sample = options["k"], options["sample"]
        if not 1 <= k <= shop_search_settings.MAX_LIMIT:
            raise CommandError(
                f"--k must be from 1 to {shop_search_settings.MAX_LIMIT} "
                f"(SHOP_SEARCH['MAX_LIMIT'])."
            )
        if sample < 0:
            raise CommandError("--sample must be 0 or more.")
        if not sample and not options["queries"]:
            raise CommandError(
                "Nothing to evaluate: pass --queries FILE.csv or --sample N."
            )
        channels = [c.strip() for c in options["channels"].split(",") if c.strip()]
        unknown = sorted(set(channels) - set(evaluation.CHANNELS))
        if unknown or not channels:
            raise CommandError(
                f"Unknown channel(s) {', '.join(unknown) or '(none given)'}: "
                f"--channels takes a comma-separated list of "
                f"{', '.join(evaluation.CHANNELS)}."
            )
        queryset = self.products(options["model"])
        as_json = options["format"] == "json"
        # A progress bar and warnings must not break the JSON on stdout.
        notes = self.stderr if as_json else self.stdout
        verbosity = options["verbosity"]

        with evaluation.rolled_back(queryset.db):
            current = serving(queryset.db)
            counts = evaluation.coverage(queryset, current)
            products = evaluation.sample_products(queryset, sample) if sample else []
            language = (settings.LANGUAGE_CODE or "en").split("-")[0]
            queries = evaluation.catalog_queries(
                products, language=language, seed=options["seed"]
            )
            if options["queries"]:
                try:
                    queries += evaluation.read_queries(options["queries"], queryset)
                except evaluation.QueriesFileError as exc:
                    raise CommandError(str(exc)) from exc
            kinds = Counter(query.kind for query in queries)
            label = queryset.model._meta.label
            warnings = self.warnings(current, counts)
            if verbosity and not as_json:
                self.stdout.write(
                    f"{label}: {counts['products']} visible product(s), "
                    f"{counts['with_words']} with indexed words, "
                    f"{counts['with_image_vector']} with an image vector; "
                    f"{len(products)} sampled."
                )
                self.stdout.write(
                    f"Queries: {len(queries)} ("
                    + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                    + f"); top {k} of each channel scored."
                )
                self.stdout.write(
                    f"Serving models: {current.image_model} / {current.text_model}"
                )
            for warning in warnings:
                notes.write(self.style.WARNING(warning))
            bar = progress_bar(len(queries), label, notes, verbosity, unit="query")
            try:
                report = evaluation.evaluate(
                    queryset,
                    queries,
                    k=k,
                    channels=channels,
                    current=current,
                    language=language,
                    progress=bar.update if bar is not None else None,
                )
            finally:
                if bar is not None:
                    bar.close()

        if as_json:
            about = {
                "model": label,
                "sampled": len(products),
                **counts,
                "serving": {
                    "image_model": current.image_model,
                    "text_model": current.text_model,
                    "test_models": evaluation.uses_test_models(current),
                },
                "queries": dict(kinds),
                "warnings": warnings,
            }
            self.stdout.write(json.dumps(evaluation.as_json(report, **about), indent=2))
            return
        self.stdout.write("")
        self.stdout.write(evaluation.format_table(report))
        if verbosity:
            self.stdout.write(
                f"\nrecall@1, recall@{k}: share of the expected products in the "
                f"top 1 / top {k}. mrr: mean of 1/rank of the first expected "
                f"product in the top {k} (0 if absent). answered: queries the "
                f"channel ranked anything for (typo ranks only queries with a "
                f"corrected word, some_words only those no product has every "
                f"word of). fused: what shoppers get."
            )
        if verbosity > 1 and report.misses:
            self.stdout.write(f"\nNot in the fused top {k} ({len(report.misses)}):")
            for query in report.misses[:MISSES_SHOWN]:
                self.stdout.write(
                    f"  {query.kind:<10} {query.language or '-':<5} {query.text}"
                )
            if len(report.misses) > MISSES_SHOWN:
                self.stdout.write("  ... (all of them: --format json)")

    def products(self, label: str | None) -> Any:
        """The visible products of ``--model`` (or of PRODUCT_MODEL)."""
        from shop_search.search import product_model, visible_products

        try:
            default = product_model()
        except ImproperlyConfigured as exc:
            if not label:
                raise CommandError(f"{exc} Or pass --model app_label.Model.") from exc
            default = None
        model = selected_models([label])[0] if label else default
        if model is not default:
            # VISIBLE_PRODUCTS declares the visible products of PRODUCT_MODEL.
            return model._default_manager.all()
        try:
            return visible_products(None)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc

    def warnings(self, current: Any, counts: dict[str, int]) -> list[str]:
        warnings = []
        if evaluation.uses_test_models(current):
            warnings.append(
                "The serving models are the tiny random-weight TEST models: "
                "the image and meaning channels (and their share of fused) rank "
                "at random here, so only the word channels (identifier, name, "
                "typo, some_words) measure anything. Set SHOP_SEARCH "
                "IMAGE_MODEL/TEXT_MODEL to real models and run "
                "shop_search_reindex to measure them."
            )
        if counts["with_words"] < counts["products"]:
            warnings.append(
                f"{counts['products'] - counts['with_words']} visible product(s) "
                f"have no indexed words, so no word channel can find them: run "
                f"manage.py shop_search_reindex first."
            )
        return warnings
