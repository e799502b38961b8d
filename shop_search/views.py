"""
The storefront search page: text search, photo search and shop the look.

Server-rendered (``shop_search/search.html``, override it in your templates
folder), a little plain JavaScript, and the same read path as the API. The
page answers its own autocomplete (``?suggest=<prefix>``, JSON), so it does
not need the API to be mounted.
"""

from __future__ import annotations

import base64
import io
import logging
import unicodedata
from typing import Any

from django import forms
from django.conf import settings
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.utils.html import conditional_escape, format_html
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from . import categories, search, throttling
from .api.serializers import image_url
from .conf import import_from_setting, shop_search_settings
from .documents import WORD, fold
from .exceptions import (
    ImageError,
    ModelLoadError,
    SearchBusy,
    ShopSearchError,
    http_status,
)
from .filtering import apply_filters
from .images import load_image
from .uploads import limit_upload_size

__all__ = ["SearchPageView"]

logger = logging.getLogger(__name__)


class TextSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=2000, label=_("Search"))
    offset = forms.IntegerField(required=False, min_value=0, max_value=10_000)
    # Checked by search.search_text against SHOP_SEARCH["SORTS"] (400 if unknown).
    sort = forms.CharField(required=False, max_length=50)


#: How the sort control names the default orders; other keys of
#: SHOP_SEARCH["SORTS"] are shown by their key.
SORT_LABELS = {
    "relevance": _("Relevance"),
    "price": _("Price: low to high"),
    "-price": _("Price: high to low"),
}

#: Parameters that are not filters: the sort form and links set them anew.
_NOT_FILTERS = ("q", "sort", "offset", "suggest")


class PhotoSearchForm(forms.Form):
    image = forms.FileField(label=_("Photo"))
    look = forms.BooleanField(required=False, label=_("Find each item (shop the look)"))


@method_decorator(csrf_exempt, name="dispatch")  # checked in dispatch, see there
class SearchPageView(View):
    """
    GET: text search (``?q=``, filters, ``sort``, ``offset``), or with
    ``?suggest=<prefix>`` autocomplete as JSON
    (``{"products": [{"text"}], "categories": [{"id", "name"}]}``).
    POST: photo search.
    """

    template_name = "shop_search/search.html"

    #: Rate-limit scopes, shared with the API (``SHOP_SEARCH['THROTTLE_RATES']``).
    throttle_scopes = {
        "GET": "shop_search_text",
        "HEAD": "shop_search_text",  # Django answers HEAD with get()
        "POST": "shop_search_image",
    }

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any):
        scope = self.throttle_scopes.get(request.method)
        ident = throttling.client_ident(request, getattr(request, "user", None))
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            # An empty search form costs nothing; a search or a suggestion
            # (one per pause in typing) does.
            costs = any(request.GET.get(name) for name in ("q", "suggest"))
            wait = throttling.hit(scope, ident) if scope and costs else None
        else:
            # A client over its limit is refused before its body is read.
            # Then the size and the CSRF token (see check_upload); a request
            # is counted once its token passed, so that forged posts from
            # another site do not spend a shopper's searches.
            wait = throttling.blocked(scope, ident) if scope else None
            if wait is None:
                refused = self.check_upload(request)
                if refused is not None:
                    return refused
                wait = throttling.hit(scope, ident) if scope else None
        if wait is not None:
            return self.throttled(request, wait)
        try:
            return super().dispatch(request, *args, **kwargs)
        except OperationalError as exc:
            # Connection pool exhausted or database down: 503, not 500.
            logger.warning("Search page answered 503: database unavailable: %s", exc)
            response = HttpResponse(
                _("Search is busy. Please try again in a moment."),
                status=503,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = "2"
            return response

    def throttled(self, request: HttpRequest, wait: float) -> HttpResponse:
        """429, as JSON for a suggestion and as the page otherwise."""
        if "suggest" in request.GET:
            response: HttpResponse = JsonResponse(
                {"code": "throttled", "message": "Too many searches; wait a moment."},
                status=429,
            )
        else:
            context = _empty_forms()
            context["error"] = _("Too many searches. Please wait a moment.")
            response = render(request, self.template_name, context, status=429)
        response["Retry-After"] = str(max(1, round(wait)))
        return response

    def check_upload(self, request: HttpRequest) -> HttpResponse | None:
        """
        The upload's size, its CSRF token, then the upload read; None when
        all pass. In this order because ``CsrfViewMiddleware`` reads the
        whole body, of any size, to find the form's token: the view is
        exempt from the middleware and runs the same check here (as DRF's
        views do), once :func:`~shop_search.uploads.limit_upload_size` has
        refused a body too large by its headers and capped the rest.
        """
        context = _empty_forms()
        try:
            limit_upload_size(request)
            refused = None
            middleware = _csrf_middleware()
            if middleware is not None:  # the project's own, if it has one
                check = middleware(_no_response)
                check.process_request(request)
                refused = check.process_view(request, None, (), {})
            if refused is None:
                # Read here, under the limit, whatever the check read.
                request.FILES  # noqa: B018
            return refused
        except ImageError as exc:
            return self.render_error(context, exc)
        except MultiPartParserError:
            context["error"] = _("The upload could not be read.")
            return self.render(context, status=400)

    def get_queryset(self):
        """The products shoppers may find: ``SHOP_SEARCH['VISIBLE_PRODUCTS']``
        (declare visibility there once, for every view), or override."""
        return search.visible_products(self.request)

    def get(self, request: HttpRequest) -> HttpResponse:
        if "suggest" in request.GET:
            return self.suggestions(request.GET["suggest"])
        form = TextSearchForm(request.GET)
        context: dict[str, Any] = {"form": form, "photo_form": PhotoSearchForm()}
        if not form.is_valid():
            return self.render(context, status=400)
        query = form.cleaned_data["q"]
        if not query:
            return self.render(context)
        try:
            queryset, applied = apply_filters(self.get_queryset(), request.GET)
            sort = form.cleaned_data["sort"] or "relevance"
            page = search.text_search(
                queryset,
                query,
                categories=4,
                offset=form.cleaned_data["offset"] or 0,
                sort=sort,
            )
            query = page.extra["query"]
            chips = [
                {
                    "category": x.category,
                    "name": categories.display_name(x.category),
                    "probability": x.probability,
                }
                for x in page.extra["categories"]
            ]
        except ShopSearchError as exc:
            if exc.code == "query_empty":  # zero-width and control characters
                return self.render(context)  # as for spaces: the empty form
            return self.render_error(context, exc)
        no_match = page.extra.get("no_match", False)
        for chip in chips:
            # After no match, a chip searches for the category's own name.
            words = chip["name"] if no_match else query
            chip["url"] = self.link(words, category=chip["category"].pk)
        context.update(
            query=query,
            page=page,
            results=self.results(page, matched_words(page)),
            chips=chips,
            all_url=self.link(query, category=None),
            active_category=applied.get("category"),
            no_match=no_match,
            count_text=count_text(page),
            sort=sort,
            sorts=[
                (key, SORT_LABELS.get(key, key))
                for key in ["relevance", *shop_search_settings.SORTS]
            ],
            sort_keep=[
                (name, value)
                for name, values in request.GET.lists()
                if name not in _NOT_FILTERS
                for value in values
            ],
            # Kept for templates that build their own links from it.
            prev_offset=max(0, page.offset - page.limit) if page.offset else None,
            prev_url=(
                self.link(query, offset=max(0, page.offset - page.limit))
                if page.offset
                else None
            ),
            next_url=(
                self.link(query, offset=page.offset + page.limit)
                if page.has_more
                else None
            ),
        )
        return self.render(context)

    def link(self, query: str, **changes: Any) -> str:
        """This search's URL with ``changes`` (None drops a parameter); the
        filters and sort stay, a new category or query starts at offset 0."""
        params: QueryDict = self.request.GET.copy()
        params["q"] = query
        if "offset" not in changes:
            params.pop("offset", None)
        params.pop("suggest", None)
        for name, value in changes.items():
            if value is None:
                params.pop(name, None)
            else:
                params[name] = str(value)
        return "?" + params.urlencode()

    def suggestions(self, prefix: str) -> JsonResponse:
        """Autocomplete for the search box: product names and categories for
        what has been typed, within the page's filters."""
        try:
            # Normalising strips a trailing space, which says the last word
            # is complete ("red " is not "red...").
            complete = prefix[-1:].isspace()
            prefix = search.normalize_query(prefix) + (" " if complete else "")
            queryset, _applied = apply_filters(self.get_queryset(), self.request.GET)
            found = search.suggest(queryset, prefix)
        except search.QueryError as exc:
            if exc.code == "query_empty":
                return JsonResponse({"products": [], "categories": []})
            return JsonResponse({"code": exc.code, "message": exc.message}, status=400)
        return JsonResponse(
            {
                "products": [{"text": text} for text in found.titles],
                "categories": [
                    {"id": c.pk, "name": categories.display_name(c)}
                    for c in found.categories
                ],
            }
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        context = _empty_forms()
        photo_form = PhotoSearchForm(request.POST, request.FILES)  # see check_upload
        context["photo_form"] = photo_form
        if not photo_form.is_valid():
            return self.render(context, status=400)
        upload = photo_form.cleaned_data["image"]
        try:
            queryset, _applied = apply_filters(self.get_queryset(), request.GET)
            # Decoded once (one slot of the upload gate, one deadline); the
            # preview and the search share the picture.
            picture = load_image(upload.read(), upload=True)
            preview = _preview(picture)
            if photo_form.cleaned_data["look"]:
                look = search.shop_the_look(queryset, picture)
                context["look"] = {
                    "width": look.image_size[0],
                    "height": look.image_size[1],
                    # The photo's frame takes the photo's own proportions, so
                    # the boxes (percentages of the frame) sit on the items.
                    "ratio": f"{look.image_size[0]} / {look.image_size[1]}",
                    "items": [
                        {
                            "number": n,
                            "label": categories.display_name(item.category),
                            "score": item.score,
                            "style": _box_style(item.box, look.image_size),
                            "results": self.results(item.page),
                        }
                        for n, item in enumerate(look.items, start=1)
                    ],
                }
                page = look.whole_image
            else:
                page = search.search_image(queryset, picture)
        except ShopSearchError as exc:
            return self.render_error(context, exc)
        context.update(photo=preview, page=page, results=self.results(page))
        return self.render(context)

    def results(
        self, page: search.Page, words: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """One dict per hit for ``_result.html``; ``name`` has ``words`` marked."""
        return [
            {
                "product": hit.object,
                "name": highlight(str(hit.object), words),
                "matched": hit.matched,
                "score": hit.score,
                "image": image_url(hit.object, self.request),
                "price": self.accessor("RESULT_PRICE", hit.object),
                "url": self.accessor("RESULT_URL", hit.object),
            }
            for hit in page
        ]

    def accessor(self, setting: str, product: Any) -> Any:
        """``RESULT_PRICE`` / ``RESULT_URL`` for one product (see conf.py)."""
        name = getattr(shop_search_settings, setting)
        if not name:
            return None
        if "." in name:
            return import_from_setting(setting)(product, self.request)
        value = getattr(product, name, None)
        return value() if callable(value) else value

    def render_error(
        self, context: dict[str, Any], exc: ShopSearchError
    ) -> HttpResponse:
        if isinstance(exc, (ModelLoadError, SearchBusy)):
            context["error"] = _("Search is temporarily unavailable. Please try again.")
            response = self.render(context, status=503)
            response["Retry-After"] = "30" if isinstance(exc, ModelLoadError) else "2"
            return response
        context["error"] = exc.message
        return self.render(context, status=http_status(exc))

    def render(self, context: dict[str, Any], status: int = 200) -> HttpResponse:
        return render(self.request, self.template_name, context, status=status)


def _empty_forms() -> dict[str, Any]:
    """A page context with both search forms empty."""
    return {"form": TextSearchForm(), "photo_form": PhotoSearchForm()}


def _no_response(request: HttpRequest) -> None:
    """The ``get_response`` of a middleware that is only asked to check."""
    return None


def _csrf_middleware() -> type[CsrfViewMiddleware] | None:
    """The project's CSRF middleware class (Django's or a subclass of it),
    or None when ``MIDDLEWARE`` has none: then nothing checked the page's
    posts before either."""
    for path in settings.MIDDLEWARE:
        middleware = import_string(path)
        if isinstance(middleware, type) and issubclass(middleware, CsrfViewMiddleware):
            return middleware
    return None


def count_text(page: search.Page) -> str:
    """The count as shoppers read it: "37 products", or "1000+ products"."""
    count = page.extra.get("count", 0)
    shown = count if page.extra.get("count_exact", True) else f"{count}+"
    return ngettext("%(count)s product", "%(count)s products", count) % {"count": shown}


def matched_words(page: search.Page) -> frozenset[str]:
    """The folded words a text search matched: as typed, and as corrected."""
    words = page.extra.get("words", [])
    return frozenset([*words, *page.extra.get("corrected", {}).values()])


def highlight(text: str, words: frozenset[str]) -> SafeString:
    """
    ``text`` escaped, each word whose folded form is in ``words`` wrapped in
    ``<mark>``. Words are cut and folded as the search cuts and folds them,
    so "Größe" is marked for "grosse"; a hyphenated word is marked for one of
    its parts too, as PostgreSQL matches "T-shirt" for "shirt".
    """
    if not words:
        return conditional_escape(text)
    text = unicodedata.normalize("NFC", text)  # an accent is part of its word
    parts, end = [], 0
    for found in WORD.finditer(text):
        word = fold(found.group())
        if word in words or not words.isdisjoint(word.split("-")):
            parts.append(conditional_escape(text[end : found.start()]))
            parts.append(format_html("<mark>{}</mark>", found.group()))
            end = found.end()
    parts.append(conditional_escape(text[end:]))
    return mark_safe("".join(parts))  # every part is escaped above


def _preview(picture: Any) -> str:
    """The uploaded photo as a small JPEG data URL, to draw the boxes on."""
    image = picture.copy()
    image.thumbnail((640, 640))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _box_style(box: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    x0, y0, x1, y1 = box
    width, height = size
    return (
        f"left:{100 * x0 / width:.2f}%;top:{100 * y0 / height:.2f}%;"
        f"width:{100 * (x1 - x0) / width:.2f}%;height:{100 * (y1 - y0) / height:.2f}%"
    )
