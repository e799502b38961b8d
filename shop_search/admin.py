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
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import categories
from .conf import shop_search_settings
from .exceptions import ShopSearchError
from .indexing import index_objects
from .models import IndexStatus
from .registry import declaration
from .status import annotated_status, entry_for, status_filter, status_of, with_state

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
            if "_ss_digest" not in queryset.query.annotations:
                queryset = with_state(queryset)
            return queryset.filter(status_filter(value))
        return queryset


class SearchableAdminMixin:
    """ModelAdmin mixin: index status column, filter, re-index action, details."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The status column reads these annotations: no query per row.
        return with_state(super().get_queryset(request))

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        obj = form.instance
        # Indexing runs once the admin's transaction commits, after the
        # gallery rows saved here; this runs after it and says whether the
        # images made it into search (only "changed successfully" otherwise).
        transaction.on_commit(
            lambda: self.report_indexing(request, obj),
            using=obj._state.db,
            robust=True,  # the change is saved: a failing report must not 500
        )

    def report_indexing(self, request: HttpRequest, obj: Any) -> None:
        """A warning when ``obj``'s images could not be indexed on save."""
        if shop_search_settings.INDEXING_MODE == "celery":
            return  # a worker indexes it later; the status column tells
        # One query, as for the changelist's status column.
        row = with_state(self.model._base_manager.filter(pk=obj.pk)).first()
        status = annotated_status(row) if row is not None else IndexStatus.INDEXED
        if status in (IndexStatus.INDEXED, IndexStatus.NO_IMAGE):
            return
        if status in (IndexStatus.FAILED, IndexStatus.GIVEN_UP):
            message = _(
                "“%(product)s” was saved, but its images could not be indexed "
                "for search: %(error)s"
            ) % {"product": obj, "error": row._ss_error}
        else:
            message = _(
                "“%(product)s” was saved, but it is not indexed for search yet "
                "(see the log); shop_search_reindex will index it."
            ) % {"product": obj}
        self.message_user(request, message, messages.WARNING)

    def get_list_display(self, request: HttpRequest) -> Any:
        return [*super().get_list_display(request), "search_index_status"]

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [*super().get_list_filter(request), IndexStatusFilter]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("search_index_details")
            if declaration(self.model).categories:
                fields.append("category_suggestions")
        return fields

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        if self.has_change_permission(request):
            names = ["reindex_selected"]
            if declaration(self.model).categories:
                names.append("apply_suggested_categories")
            for name in names:
                action = getattr(SearchableAdminMixin, name)
                actions[name] = (action, name, action.short_description)
        return actions

    def get_urls(self) -> list[Any]:
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path(
                "<path:object_id>/shop-search/accept-category/<str:category_id>/",
                self.admin_site.admin_view(self.accept_category_view),
                name="%s_%s_accept_category" % info,
            ),
            *super().get_urls(),
        ]

    @admin.display(description=_("search index"))
    def search_index_status(self, obj: Any) -> str:
        if hasattr(obj, "_ss_digest"):
            status = IndexStatus(annotated_status(obj))
        else:
            status = IndexStatus(status_of(obj))
        return format_html(
            '<span style="color:{}">{}</span>', _STATUS_COLOURS[status], status.label
        )

    @admin.display(description=_("search index"))
    def search_index_details(self, obj: Any) -> str:
        status = IndexStatus(status_of(obj))
        parts = [format_html("<strong>{}</strong>", status.label)]
        images = declaration(type(obj)).image_sources(obj)
        parts.append(format_html("images: {}", len(images)))
        entry = entry_for(obj)
        if entry is not None:
            parts.append(format_html("model: <code>{}</code>", entry.image_model))
            parts.append(format_html("last attempt: {}", entry.indexed_at))
            if entry.error:
                parts.append(
                    format_html(
                        '<span style="color:#c62828">error after {} attempt(s): '
                        "{}</span>",
                        entry.attempts,
                        entry.error,
                    )
                )
        return format_html("<br>".join(["{}"] * len(parts)), *parts)

    @admin.display(description=_("suggested categories"))
    def category_suggestions(self, obj: Any) -> str:
        try:
            suggestions = categories.suggest_for_product(obj)[:3]
        except ShopSearchError as exc:
            return exc.message
        if not suggestions:
            return _("Available once the product is indexed.")
        current = categories.current_category_pks(obj)
        info = self.model._meta.app_label, self.model._meta.model_name
        rows = []
        for suggestion in suggestions:
            url = reverse(
                "admin:%s_%s_accept_category" % info,
                args=[obj.pk, suggestion.category.pk],
            )
            if suggestion.category.pk in current:
                button = format_html("<em>{}</em>", _("current"))
            else:
                button = format_html(
                    '<button type="submit" formaction="{}" formmethod="post" '
                    'class="button" name="_accept_category">{}</button>',
                    url,
                    _("Accept"),
                )
            rows.append(
                (
                    categories.display_name(suggestion.category),
                    f"{suggestion.probability:.0%}",
                    button,
                )
            )
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    def accept_category_view(
        self, request: HttpRequest, object_id: str, category_id: str
    ) -> HttpResponseRedirect:
        if request.method != "POST":
            raise PermissionDenied
        # Ids from the URL: one that is no key of these models is a 404, as
        # in the admin's own views (get_object turns it into None).
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        field = declaration(self.model).categories
        category_model = categories.category_model(self.model)
        try:
            key = category_model._meta.pk.to_python(category_id)
            category = category_model._default_manager.get(pk=key)
        except (ValidationError, ValueError, category_model.DoesNotExist) as exc:
            raise Http404 from exc
        how = categories.assign(obj, category)
        self.log_change(request, obj, [{"changed": {"fields": [field]}}])
        names = {"product": obj, "category": categories.display_name(category)}
        if how == "added":
            message = _("“%(category)s” added to the categories of “%(product)s”.")
        else:
            message = _("Category of “%(product)s” set to “%(category)s”.")
        self.message_user(request, message % names, messages.SUCCESS)
        info = self.model._meta.app_label, self.model._meta.model_name
        return HttpResponseRedirect(reverse("admin:%s_%s_change" % info, args=[obj.pk]))

    def apply_suggested_categories(
        self, request: HttpRequest, queryset: QuerySet
    ) -> None:
        threshold = shop_search_settings.CATEGORY_APPLY_THRESHOLD
        changes = categories.apply_suggestions(queryset, threshold=threshold)
        if not changes:
            self.message_user(
                request,
                _(
                    "No category changed: no suggestion reached %(t)s, or the "
                    "products already have the suggested category."
                )
                % {"t": f"{threshold:.0%}"},
                messages.INFO,
            )
            return
        for product, _old, _new, _probability in changes:
            self.log_change(
                request,
                product,
                [{"changed": {"fields": [declaration(queryset.model).categories]}}],
            )
        name = categories.display_name
        listing = "; ".join(
            f"{product}: {name(old)} → {name(new)} ({probability:.0%})"
            if old is not None
            else f"{product}: + {name(new)} ({probability:.0%})"
            for product, old, new, probability in changes
        )
        if categories.is_many(queryset.model):
            text = ngettext(
                "Added a category to %(n)d product (its other categories are "
                "kept): %(list)s",
                "Added a category to %(n)d products (their other categories are "
                "kept): %(list)s",
                len(changes),
            )
        else:
            text = ngettext(
                "Changed the category of %(n)d product: %(list)s",
                "Changed the category of %(n)d products: %(list)s",
                len(changes),
            )
        self.message_user(
            request, text % {"n": len(changes), "list": listing}, messages.SUCCESS
        )

    apply_suggested_categories.short_description = _(  # type: ignore[attr-defined]
        "Apply suggested categories (confident suggestions only)"
    )

    def reindex_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        pks = list(queryset.values_list("pk", flat=True))
        if shop_search_settings.INDEXING_MODE == "celery":
            # Queued in chunks for the workers: the request only sends them.
            from .tasks import index_products

            label = queryset.model._meta.label
            try:
                for start in range(0, len(pks), 500):
                    index_products.delay(label, pks[start : start + 500], force=True)
            except Exception as exc:  # the broker is down
                self.message_user(
                    request,
                    _("Re-indexing could not be queued: %s") % exc,
                    messages.ERROR,
                )
                return
            self.message_user(
                request,
                ngettext(
                    "Queued %(n)d product for re-indexing; the status column "
                    "shows when it is done.",
                    "Queued %(n)d products for re-indexing; the status column "
                    "shows when they are done.",
                    len(pks),
                )
                % {"n": len(pks)},
                messages.SUCCESS,
            )
            return
        limit = int(shop_search_settings.ADMIN_REINDEX_LIMIT)
        if len(pks) > limit:
            # Encoded in the request: more would outlast the proxy's timeout.
            self.message_user(
                request,
                _(
                    "%(n)d products selected; the admin re-indexes at most "
                    "%(limit)d at once (ADMIN_REINDEX_LIMIT). Select fewer, or "
                    "run manage.py shop_search_reindex --all."
                )
                % {"n": len(pks), "limit": limit},
                messages.ERROR,
            )
            return
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
