"""
Admin parts for searchable products.

Add :class:`SearchableAdminMixin` before ``admin.ModelAdmin``::

    @admin.register(Product)
    class ProductAdmin(SearchableAdminMixin, admin.ModelAdmin):
        list_display = ["name", "price"]

It adds an index-status column and filter, the action "Re-index selected
products", and the index state (with any failure reason) on the change page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .exceptions import ShopSearchError
from .indexing import index_objects
from .models import IndexStatus, status_q

__all__ = ["SearchableAdminMixin", "IndexStatusFilter"]

_STATUS_COLOURS = {
    IndexStatus.INDEXED: "#2e7d32",
    IndexStatus.MISSING: "#777",
    IndexStatus.STALE: "#b26a00",
    IndexStatus.FAILED: "#c62828",
    IndexStatus.GIVEN_UP: "#c62828",
    IndexStatus.NO_IMAGE: "#777",
}


class IndexStatusFilter(admin.SimpleListFilter):
    """Filter the changelist by :class:`~shop_search.models.IndexStatus`."""

    title = _("search index")
    parameter_name = "search_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return IndexStatus.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in IndexStatus.values:
            return queryset.filter(status_q(queryset.model, value))
        return queryset


class SearchableAdminMixin:
    """ModelAdmin mixin: index status column, filter, re-index action, details."""

    def get_list_display(self, request: HttpRequest) -> Any:
        return [*super().get_list_display(request), "search_index_status"]

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [*super().get_list_filter(request), IndexStatusFilter]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("search_index_details")
        return fields

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        if self.has_change_permission(request):
            action = SearchableAdminMixin.reindex_selected
            actions["reindex_selected"] = (
                action,
                "reindex_selected",
                action.short_description,
            )
        return actions

    @admin.display(description=_("search index"))
    def search_index_status(self, obj: Any) -> str:
        status = IndexStatus(obj.search_status)
        return format_html(
            '<span style="color:{}">{}</span>', _STATUS_COLOURS[status], status.label
        )

    @admin.display(description=_("search index"))
    def search_index_details(self, obj: Any) -> str:
        status = IndexStatus(obj.search_status)
        parts = [format_html("<strong>{}</strong>", status.label)]
        if obj.search_model:
            parts.append(format_html("model: <code>{}</code>", obj.search_model))
        if obj.search_indexed_at:
            parts.append(format_html("last attempt: {}", obj.search_indexed_at))
        if obj.search_error:
            parts.append(
                format_html(
                    '<span style="color:#c62828">error after {} attempt(s): {}</span>',
                    obj.search_attempts,
                    obj.search_error,
                )
            )
        return format_html("<br>".join(["{}"] * len(parts)), *parts)

    def reindex_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        try:
            result = index_objects(queryset.model, pks, force=True)
        except ShopSearchError as exc:
            self.message_user(
                request, _("Re-indexing failed: %s") % exc.message, messages.ERROR
            )
            return
        self.message_user(
            request,
            ngettext(
                "Re-indexed %(encoded)d product (%(failed)d failed, %(cleared)d "
                "without image).",
                "Re-indexed %(encoded)d products (%(failed)d failed, %(cleared)d "
                "without image).",
                result.encoded,
            )
            % {
                "encoded": result.encoded,
                "failed": result.failed,
                "cleared": result.cleared,
            },
            messages.WARNING if result.failed else messages.SUCCESS,
        )

    reindex_selected.short_description = _("Re-index selected products")  # type: ignore[attr-defined]
