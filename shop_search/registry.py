"""
Which models are searchable, and how: one :class:`Declaration` per model.

A shop declares a model it does not own with :func:`register`, from its
own ``AppConfig.ready()``; no column is added to the shop's table (vectors
and words live in shop_search's tables, keyed by content type and primary
key)::

    import shop_search

    shop_search.register(
        "catalogue.Product",
        images=["images__original"],   # a gallery: reverse ForeignKey + file field
        text=["title", "description"],
        identifiers=["upc"],
        categories="categories",       # ForeignKey or many-to-many, trees too
        parent="parent",               # variants: children use the parent's images
        queryset="myshop.search.visible_products",
    )

A model the shop owns may inherit :class:`~shop_search.models.SearchableProduct`
and declare the same with ``search_*`` class attributes; both become a
:class:`Declaration` here, and every other module reads only that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.module_loading import import_string

__all__ = [
    "Declaration",
    "ImageSource",
    "register",
    "unregister",
    "declaration",
    "is_searchable",
    "searchable_models",
    "images_digest",
    "image_fingerprint",
    "on_change",
    "inherits_base",
]

_registered: dict[str, dict[str, Any]] = {}  # label_lower -> options
_declarations: dict[type, Declaration] = {}
_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever the searchable models change (the signal
    handlers reconnect themselves)."""
    if listener not in _listeners:
        _listeners.append(listener)


def _changed() -> None:
    _declarations.clear()
    from django.apps import apps

    if apps.models_ready:
        for listener in _listeners:
            listener()


def inherits_base(model: type) -> bool:
    """Whether ``model`` subclasses :class:`~shop_search.models.SearchableProduct`
    (which sets this flag; read here so that this module stays below models)."""
    return bool(getattr(model, "_shop_search_base", False))


@dataclass(frozen=True)
class ImageSource:
    """One image of a product: ``key`` names where it comes from (the field,
    or the gallery row), ``file`` is the stored file, ``position`` its order."""

    key: str
    file: Any
    position: int

    @property
    def name(self) -> str:
        return str(getattr(self.file, "name", self.file) or "")

    @property
    def fingerprint(self) -> str:
        return image_fingerprint(self.file)


def image_fingerprint(image: Any) -> str:
    """
    MD5 of a stored file's name. Django gives every upload a new name, so a
    changed name means a changed image; the same name means the same image,
    so its vector is reused (a variant showing its parent's photo).
    """
    name = getattr(image, "name", image) or ""
    return hashlib.md5(str(name).encode()).hexdigest()


@dataclass
class Declaration:
    """
    How one model is searched. ``images``: paths to file fields, each either
    a field of the model (``"image"``) or a gallery, a reverse ForeignKey
    followed by the related model's file field (``"images__image"``, ordered
    by ``image_order`` or the gallery's ``Meta.ordering``). ``text``,
    ``names`` and ``identifiers``: the words (see :mod:`shop_search.documents`).
    ``categories``: a ForeignKey or many-to-many to the category model.
    ``parent``: a ForeignKey to the parent product; a child without images
    shows its parent's, and with ``group_variants`` (default) a family is one
    hit (its best-matching member). ``queryset``: a callable (or its dotted
    path) taking the request and returning the products shoppers may find.
    """

    model: type[models.Model]
    images: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    names: list[str] | None = None
    identifiers: list[str] = field(default_factory=list)
    categories: str | None = None
    parent: str | None = None
    group_variants: bool = True
    image_order: str | None = None
    queryset: Callable[[Any], models.QuerySet] | str | None = None

    @property
    def label(self) -> str:
        return self.model._meta.label

    @property
    def name_fields(self) -> list[str]:
        return list(self.names) if self.names else self.text[:1]

    # --- images ---------------------------------------------------------------

    def gallery(self, path: str) -> tuple[type[models.Model], str, str] | None:
        """For a gallery path: (gallery model, its ForeignKey to the product,
        its file field); None for a field of the model itself."""
        if "__" not in path:
            return None
        relation, file_field = path.split("__", 1)
        rel = self.model._meta.get_field(relation)
        return rel.related_model, rel.field.name, file_field

    def galleries(self) -> list[tuple[type[models.Model], str, str]]:
        return [g for g in map(self.gallery, self.images) if g is not None]

    def _order(self, gallery: type[models.Model]) -> list[str]:
        if self.image_order:
            return [self.image_order]
        return [*(gallery._meta.ordering or []), "pk"]

    def own_images(self, obj: Any) -> list[ImageSource]:
        """The images of ``obj`` itself, in display order."""
        found: list[ImageSource] = []
        for path in self.images:
            gallery = self.gallery(path)
            if gallery is None:
                value = getattr(obj, path)
                if value:
                    found.append(ImageSource(path, value, len(found)))
                continue
            model, fk, file_field = gallery
            relation = path.split("__", 1)[0]
            prefetched = getattr(obj, "_prefetched_objects_cache", {}).get(relation)
            order = self._order(model)
            if prefetched is not None and all(isinstance(o, str) for o in order):
                rows = _ordered(list(prefetched), order)  # prefetched: no query
            else:
                rows = model._base_manager.using(obj._state.db).filter(**{fk: obj.pk})
                rows = rows.order_by(*order).only("pk", file_field)
            for row in rows:
                value = getattr(row, file_field)
                if value:
                    found.append(ImageSource(f"{path}:{row.pk}", value, len(found)))
        return found

    def image_sources(self, obj: Any) -> list[ImageSource]:
        """The images that represent ``obj``: its own, or else its parent's."""
        own = self.own_images(obj)
        if own or not self.parent:
            return own
        parent = getattr(obj, self.parent)
        return self.own_images(parent) if parent is not None else []

    def field_image(self, obj: Any) -> Any:
        """``obj``'s first image when it is a file field of ``obj`` itself
        (before any gallery path): read without a query. None when the first
        image would come from a gallery or the parent, or there is none."""
        for path in self.images:
            if self.gallery(path) is not None:
                return None
            value = getattr(obj, path)
            if value:
                return value
        return None

    def primary_image(self, obj: Any) -> Any:
        """The file shown for ``obj`` (its first image), or None."""
        own = self.field_image(obj)
        if own:
            return own
        sources = self.image_sources(obj)
        return sources[0].file if sources else None

    def group_key(self, obj: Any) -> str:
        """The family ``obj`` belongs to: its parent's key, or its own."""
        if self.parent and self.group_variants:
            parent_pk = getattr(obj, self.model._meta.get_field(self.parent).attname)
            if parent_pk is not None:
                return str(parent_pk)
        return str(obj.pk)

    def own_images_sql(self, outer: str = "pk") -> models.Expression:
        """The names of the images of the row at ``outer`` (``"pk"``, or the
        parent's ForeignKey), one per line, in SQL: how bulk updates are found."""
        from django.contrib.postgres.aggregates import StringAgg
        from django.db.models.functions import NullIf

        prefix = "" if outer == "pk" else self.parent + "__"
        parts: list[Any] = []
        for path in self.images:
            gallery = self.gallery(path)
            if gallery is None:
                parts.append(NullIf(models.F(prefix + path), models.Value("")))
                continue
            model, fk, file_field = gallery
            names = (
                model._base_manager.filter(**{fk: models.OuterRef(outer)})
                .exclude(**{file_field: ""})
                .exclude(**{f"{file_field}__isnull": True})
                .order_by()
                .values(fk)
                .annotate(
                    _names=StringAgg(
                        file_field, delimiter="\n", ordering=self._order(model)
                    )
                )
                .values("_names")
            )
            parts.append(models.Subquery(names, output_field=models.TextField()))
        if not parts:
            return models.Value("", output_field=models.TextField())
        # concat_ws skips NULLs: a missing part adds no separator.
        return models.Func(
            models.Value("\n"),
            *parts,
            function="concat_ws",
            output_field=models.TextField(),
        )

    def images_sql(self) -> models.Expression:
        """:func:`images_digest` of :meth:`image_sources`, in SQL."""
        from django.db.models.functions import MD5, Coalesce, NullIf

        names = self.own_images_sql("pk")
        if self.parent:
            attname = self.model._meta.get_field(self.parent).attname
            names = Coalesce(
                NullIf(names, models.Value("")),
                self.own_images_sql(attname),
                models.Value(""),
                output_field=models.TextField(),
            )
        return MD5(names)


def _ordered(rows: list[Any], order: list[str]) -> list[Any]:
    """``rows`` sorted like ``order_by(*order)`` (fields of the rows)."""
    for name in reversed(order):
        attribute = "pk" if name.lstrip("-") == "pk" else name.lstrip("-")
        rows.sort(key=lambda r: getattr(r, attribute), reverse=name.startswith("-"))
    return rows


def images_digest(sources: list[ImageSource]) -> str:
    """What :meth:`Declaration.images_sql` computes: MD5 of the names, one
    per line, in order."""
    return hashlib.md5("\n".join(s.name for s in sources).encode()).hexdigest()


def register(model: type[models.Model] | str, **options: Any) -> None:
    """
    Make ``model`` (a class or ``"app_label.Model"``) searchable without
    changing it; ``options`` are :class:`Declaration`'s fields. Call it from
    an ``AppConfig.ready()``. Registering again replaces the declaration.
    """
    label = model if isinstance(model, str) else model._meta.label
    unknown = set(options) - set(Declaration.__dataclass_fields__) - {"model"}
    if unknown:
        raise TypeError(f"register() got unknown options: {', '.join(sorted(unknown))}")
    _registered[label.lower()] = options
    _changed()


def unregister(model: type[models.Model] | str) -> None:
    """Undo :func:`register` (tests)."""
    label = model if isinstance(model, str) else model._meta.label
    _registered.pop(label.lower(), None)
    _changed()


def _from_attributes(model: type[models.Model]) -> Declaration:
    """A :class:`~shop_search.models.SearchableProduct` subclass's class
    attributes as a declaration."""
    images = list(getattr(model, "search_images", None) or [])
    if not images and getattr(model, "search_image_field", None):
        images = [model.search_image_field]
    return Declaration(
        model=model,
        images=images,
        text=list(model.search_text_fields),
        names=model.search_name_fields,
        identifiers=list(model.search_identifier_fields),
        categories=model.search_category_field,
        parent=getattr(model, "search_parent_field", None),
        queryset=getattr(model, "search_queryset", None),
    )


def searchable_models() -> list[type[models.Model]]:
    """Every searchable model: registered ones, and the installed concrete
    subclasses of :class:`~shop_search.models.SearchableProduct`."""
    from django.apps import apps

    found = []
    for model in apps.get_models():
        if model._meta.proxy:
            continue
        if inherits_base(model) or model._meta.label_lower in _registered:
            found.append(model)
    return found


def is_searchable(model: type[models.Model]) -> bool:
    concrete = model._meta.concrete_model or model
    return inherits_base(model) or (concrete._meta.label_lower in _registered)


def declaration(model: type[models.Model]) -> Declaration:
    """The :class:`Declaration` of a searchable model (or its proxy)."""
    cached = _declarations.get(model)
    if cached is not None:
        return cached
    concrete = model._meta.concrete_model or model
    options = _registered.get(concrete._meta.label_lower)
    if options is not None:
        result = Declaration(model=concrete, **options)
    elif inherits_base(model):
        result = _from_attributes(model)
    else:
        raise ImproperlyConfigured(
            f"{model._meta.label} is not searchable: call "
            f"shop_search.register({model._meta.label!r}, images=[...], ...) "
            f"from an AppConfig.ready(), or inherit SearchableProduct."
        )
    if isinstance(result.queryset, str):
        try:
            result.queryset = import_string(result.queryset)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"shop_search.register({result.label!r}, queryset=...): could not "
                f"import {result.queryset!r}: {exc}."
            ) from exc
    _declarations[model] = result
    return result
