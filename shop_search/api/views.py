"""
Storefront search API views. Thin: validate, call :mod:`shop_search.search`,
serialize. Errors are JSON ``{"code": ..., "message": ..., "errors": {...}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import (
    FieldDoesNotExist,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import OperationalError
from django.db.models import prefetch_related_objects
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import (
    APIException,
    AuthenticationFailed,
    NotAuthenticated,
    Throttled,
    ValidationError,
)
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .. import categories as categories_module
from .. import search, throttling
from ..conf import import_from_setting
from ..exceptions import (
    ImageError,
    ModelLoadError,
    SearchBusy,
    ShopSearchError,
    http_status,
)
from ..filtering import FilterError, apply_filters, filter_params
from ..registry import declaration
from ..uploads import limit_upload_size
from . import serializers as s
from .parsers import SafeJSONParser
from .throttling import SearchRateThrottle

__all__ = [
    "TextSearchView",
    "ImageSearchView",
    "SimilarProductsView",
    "CategorySuggestView",
    "SuggestView",
    "exception_handler",
]

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error as ``{"code", "message", "errors"?}`` with a fitting status."""
    if isinstance(exc, FilterError):
        return _error(400, exc.code, exc.message, exc.errors)
    if isinstance(exc, ImageError):
        return _error(http_status(exc), exc.code, exc.message)
    if isinstance(exc, ModelLoadError):
        response = _error(503, exc.code, "Search is temporarily unavailable.")
        response["Retry-After"] = "30"
        return response
    if isinstance(exc, SearchBusy):
        response = _error(503, exc.code, exc.message)
        response["Retry-After"] = "2"
        return response
    if isinstance(exc, OperationalError):
        # The connection pool is exhausted or the database is unreachable:
        # a moment's wait usually fixes it, so say so instead of 500.
        logger.warning("Search answered 503: database unavailable: %s", exc)
        response = _error(
            503, "database_unavailable", "Search is busy; try again shortly."
        )
        response["Retry-After"] = "2"
        return response
    if isinstance(exc, RequestDataTooBig):
        return _error(413, "request_too_large", "The request body is too large.")
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return _error(400, "too_many_fields", str(exc))
    if isinstance(exc, ShopSearchError):
        return _error(400, exc.code, exc.message)
    if isinstance(exc, Http404):
        return _error(404, "not_found", "No such product.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.data = {
            "code": "invalid_parameters",
            "message": "Some parameters are invalid: "
            + ", ".join(sorted(map(str, exc.detail)))
            + ".",
            "errors": exc.detail,
        }
    elif isinstance(exc, APIException):
        detail = exc.detail
        response.data = {
            "code": getattr(exc, "default_code", "error"),
            "message": str(detail),
        }
    return response


def _error(code_status: int, code: str, message: str, errors: Any = None) -> Response:
    data: dict[str, Any] = {"code": code, "message": message}
    if errors:
        data["errors"] = errors
    return Response(data, status=code_status)


class SearchSchema(AutoSchema):
    """Adds the configured filter parameters (read when the schema is built)."""

    def get_override_parameters(self) -> list[Any]:
        if not getattr(self.view, "uses_filters", False):
            return super().get_override_parameters()
        filters = [
            OpenApiParameter(param.name, param.schema, required=False)
            for param in filter_params(search.product_model())
        ]
        return [*super().get_override_parameters(), *filters]


class _SearchView(APIView):
    schema = SearchSchema()
    permission_classes = [AllowAny]
    throttle_classes = [SearchRateThrottle]

    def get_exception_handler(self):
        return exception_handler

    def initial(self, request, *args: Any, **kwargs: Any) -> None:
        # Refuse oversized uploads from the headers, and cap the rest, before
        # anything reads the body: SessionAuthentication's CSRF check (a
        # logged-in shopper) reads the whole of it to find the form's token.
        self.format_kwarg = self.get_format_suffix(**kwargs)
        try:
            limit_upload_size(request._request)
        except ImageError:
            # Answered in JSON whatever the client accepts: a renderer that
            # shows the user (DRF's browsable API) would authenticate, and a
            # session's CSRF check would read the refused body after all.
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
            raise
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request) -> None:
        # Failed logins (a wrong HTTP Basic password) are counted per client
        # address; past the limit, credentials are not even checked.
        ident = throttling.client_ident(request._request)
        wait = throttling.blocked(throttling.AUTH_SCOPE, ident)
        if wait is not None:
            # A request with an Authorization header is refused. Other
            # credentials (an API key in another header, say) are not
            # checked: only a session still counts. Searches without
            # credentials go on, so that behind one shared address (a NAT)
            # one guesser locks nobody else out.
            if "HTTP_AUTHORIZATION" in request._request.META:
                raise Throttled(wait)
            request.authenticators = tuple(
                authenticator
                for authenticator in request.authenticators
                if isinstance(authenticator, SessionAuthentication)
            )
        try:
            super().perform_authentication(request)
        except (AuthenticationFailed, NotAuthenticated):
            throttling.hit(throttling.AUTH_SCOPE, ident)
            raise

    def get_queryset(self):
        """The products shoppers may find: ``SHOP_SEARCH['VISIBLE_PRODUCTS']``
        (declare visibility there once, for every view), or override."""
        return search.visible_products(self.request)

    def filtered_queryset(self, params: Any):
        queryset, _applied = apply_filters(self.get_queryset(), params)
        return _joined(queryset, self._serializer_lookups())

    def _serializer_lookups(self) -> tuple[Any, ...]:
        serializer_class = import_from_setting("PRODUCT_SERIALIZER")
        return tuple(getattr(serializer_class, "prefetch_related", ()))

    def serialize_hits(self, page: search.Page) -> list[dict[str, Any]]:
        serializer_class = import_from_setting("PRODUCT_SERIALIZER")
        context = {"request": self.request, "view": self}
        objects = [hit.object for hit in page]
        if objects:
            _prefetch(objects, self._serializer_lookups())
        products = serializer_class(objects, many=True, context=context).data
        return [
            {"score": round(hit.score, 6), "matched": hit.matched, "product": product}
            for hit, product in zip(page, products, strict=True)
        ]

    def page_data(self, page: search.Page) -> dict[str, Any]:
        return {
            "results": self.serialize_hits(page),
            "limit": page.limit,
            "offset": page.offset,
            "next_offset": page.offset + page.limit if page.has_more else None,
        }


def _prefetch(objects: list[Any], lookups: tuple[Any, ...]) -> None:
    """
    Related objects the serializer shows (a category name, say), fetched in
    one query per relation instead of one per product (none for those the
    results' query already joined, see :func:`_joined`). The result card's
    image comes from a gallery only for products without an image field of
    their own: their galleries come in one query, and none is made when
    every product has its own image.
    """
    if lookups:
        prefetch_related_objects(objects, *lookups)
    declared = declaration(type(objects[0]))
    galleries: list[str] = []
    for path in declared.images:
        relation = path.split(LOOKUP_SEP, 1)[0]
        if declared.gallery(path) is not None and relation not in lookups:
            galleries.append(relation)
    if galleries:
        without = [obj for obj in objects if declared.field_image(obj) is None]
        if without:
            prefetch_related_objects(without, *galleries)


def _joined(queryset: Any, lookups: tuple[Any, ...]) -> Any:
    """
    ``queryset`` with ``select_related`` for each of the serializer's
    ``prefetch_related`` lookups that follows only foreign keys (a product's
    category): the results then arrive with them in the same query, where a
    prefetch would cost a round trip. Other lookups (many-to-many, reverse,
    ``Prefetch`` objects) stay prefetched; so do fields ``defer``/``only``
    left out of the queryset.
    """
    deferred, defer = queryset.query.deferred_loading
    joined = []
    for lookup in lookups:
        if not isinstance(lookup, str):
            continue
        first = lookup.split(LOOKUP_SEP, 1)[0]
        if (first in deferred) == defer:
            continue
        model = queryset.model
        for part in lookup.split(LOOKUP_SEP):
            try:
                field = model._meta.get_field(part)
            except FieldDoesNotExist:
                break
            if not (field.concrete and (field.many_to_one or field.one_to_one)):
                break
            model = field.related_model
        else:
            joined.append(lookup)
    return queryset.select_related(*joined) if joined else queryset


def _category_data(suggestion: categories_module.Suggestion) -> dict[str, Any]:
    return {
        "id": suggestion.category.pk,
        "name": categories_module.display_name(suggestion.category),
        "probability": round(suggestion.probability, 6),
    }


_LENGTH_REQUIRED = OpenApiResponse(
    s.ErrorSerializer, description="A body without Content-Length (chunked)."
)
_ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="Invalid parameters."),
    429: OpenApiResponse(s.ErrorSerializer, description="Throttled; see Retry-After."),
    503: OpenApiResponse(s.ErrorSerializer, description="Models not available."),
}


class TextSearchView(_SearchView):
    """Search products by a text query in any language."""

    throttle_scope = "shop_search_text"
    uses_filters = True

    @extend_schema(
        operation_id="search_text",
        parameters=[s.TextSearchParamsSerializer],
        responses={200: s.SearchResultSerializer, **_ERRORS},
        examples=[
            OpenApiExample(
                "German query",
                response_only=True,
                value={
                    "results": [
                        {
                            "score": 0.31,
                            "product": {"id": 7, "name": "Red dotted dress"},
                        }
                    ],
                    "limit": 24,
                    "offset": 0,
                    "next_offset": 24,
                    "categories": [{"id": 2, "name": "Dresses", "probability": 0.82}],
                },
            ),
            OpenApiExample(
                "Empty query",
                status_codes=["400"],
                response_only=True,
                value={"code": "query_empty", "message": "The query is empty."},
            ),
        ],
    )
    def get(self, request, *args: Any, **kwargs: Any) -> Response:
        params = s.TextSearchParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        page = search.text_search(
            self.filtered_queryset(request.query_params),
            data["q"],
            categories=3,
            limit=data.get("limit"),
            offset=data["offset"],
            sort=data["sort"],
            facets=data["facets"],
        )
        body = self.page_data(page)
        body["count"] = page.extra["count"]
        body["count_exact"] = page.extra["count_exact"]
        body["no_match"] = page.extra["no_match"]
        if data["facets"]:
            body["facets"] = page.extra["facets"]
        # The categories the query most likely means ("search in Dresses").
        body["categories"] = [_category_data(x) for x in page.extra["categories"]]
        return Response(body)


class ImageSearchView(_SearchView):
    """Search products by an uploaded photo, optionally per detected item."""

    throttle_scope = "shop_search_image"
    parser_classes = [MultiPartParser, FormParser]
    uses_filters = True

    @extend_schema(
        operation_id="search_image",
        request={"multipart/form-data": s.ImageSearchSerializer},
        responses={
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="ImageSearchResult",
                    serializers=[s.SearchResultSerializer, s.LookResultSerializer],
                    resource_type_field_name=None,
                ),
                description="Results; with group=look, a LookResult instead.",
            ),
            411: _LENGTH_REQUIRED,
            413: OpenApiResponse(
                s.ErrorSerializer,
                description="Image too large or too costly to decode.",
            ),
            415: OpenApiResponse(s.ErrorSerializer, description="Not multipart."),
            **_ERRORS,
        },
    )
    def post(self, request, *args: Any, **kwargs: Any) -> Response:
        params = s.ImageSearchSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        queryset = self.filtered_queryset(request.query_params)
        if data["group"] == "look":
            look = search.shop_the_look(
                queryset, data["image"], limit=data.get("limit")
            )
            return Response(
                {
                    "image_size": list(look.image_size),
                    "items": [
                        {
                            "box": list(item.box),
                            "label": categories_module.display_name(item.category),
                            "category": _category_data(
                                categories_module.Suggestion(item.category, item.score)
                            ),
                            "score": round(item.score, 6),
                            "results": self.serialize_hits(item.page),
                        }
                        for item in look.items
                    ],
                    "whole_image": self.page_data(look.whole_image),
                }
            )
        page = search.search_image(
            queryset, data["image"], limit=data.get("limit"), offset=data["offset"]
        )
        return Response(self.page_data(page))


class SimilarProductsView(_SearchView):
    """Products that look like a given product (its stored vector)."""

    throttle_scope = "shop_search_text"
    uses_filters = True

    @extend_schema(
        operation_id="similar_products",
        parameters=[s.PageParamsSerializer],
        responses={200: s.SearchResultSerializer, 404: s.ErrorSerializer, **_ERRORS},
    )
    def get(self, request, pk: Any, *args: Any, **kwargs: Any) -> Response:
        params = s.PageParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            product = self.get_queryset().get(pk=pk)
        except (search.product_model().DoesNotExist, ValueError, TypeError) as exc:
            raise Http404 from exc
        queryset = self.filtered_queryset(request.query_params)
        page = search.similar_products(
            queryset, product, limit=data.get("limit"), offset=data["offset"]
        )
        return Response(self.page_data(page))


class CategorySuggestView(_SearchView):
    """Zero-shot category suggestions for an image or a text."""

    throttle_scope = "shop_search_image"
    parser_classes = [MultiPartParser, FormParser, SafeJSONParser]

    @extend_schema(
        operation_id="suggest_categories",
        request={
            "multipart/form-data": s.CategorySuggestImageSerializer,
            "application/json": s.CategorySuggestTextSerializer,
        },
        responses={
            200: OpenApiResponse(
                s.CategorySuggestResultSerializer,
                description="Categories, most likely first; probabilities over all "
                "categories sum to 1.",
            ),
            411: _LENGTH_REQUIRED,
            413: OpenApiResponse(
                s.ErrorSerializer,
                description="Image too large or too costly to decode.",
            ),
            415: OpenApiResponse(
                s.ErrorSerializer, description="Neither multipart nor JSON."
            ),
            **_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Text",
                request_only=True,
                media_type="application/json",
                value={"text": "rotes Kleid", "top": 3},
            ),
        ],
    )
    def post(self, request, *args: Any, **kwargs: Any) -> Response:
        multipart = request.content_type.startswith(
            ("multipart/", "application/x-www-form-urlencoded")
        )
        serializer = (
            s.CategorySuggestImageSerializer
            if multipart
            else s.CategorySuggestTextSerializer
        )
        params = serializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        model = search.product_model()
        if multipart:
            vector = search.image_vector(data["image"])
        else:
            vector = search.text_vector(search.normalize_query(data["text"]))
        suggestions = categories_module.classify(
            vector, categories_module.all_categories(model)
        )
        return Response(
            {"categories": [_category_data(x) for x in suggestions[: data["top"]]]}
        )


class SuggestView(_SearchView):
    """Autocomplete: product names and categories for what has been typed."""

    throttle_scope = "shop_search_text"

    @extend_schema(
        operation_id="suggest",
        parameters=[s.SuggestParamsSerializer],
        responses={200: s.SuggestResultSerializer, **_ERRORS},
    )
    def get(self, request, *args: Any, **kwargs: Any) -> Response:
        params = s.SuggestParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        # A trailing space says the last word is complete ("red " is not
        # "red..."); validation strips it.
        raw = request.query_params.get("q", "")
        prefix = data["q"] + (" " if raw[-1:].isspace() else "")
        suggestions = search.suggest(self.get_queryset(), prefix, limit=data["limit"])
        return Response(
            {
                "products": [{"text": text} for text in suggestions.titles],
                "categories": [
                    {"id": c.pk, "name": categories_module.display_name(c)}
                    for c in suggestions.categories
                ],
            }
        )
