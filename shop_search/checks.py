"""
System checks. Ids are stable; see the README's "System checks" table.

- shop_search.E001  the database server has no pgvector extension to install
- shop_search.E002  pgvector is older than 0.7 (no halfvec, no iterative scans)
- shop_search.W001  the extension is available but not yet created in the database
- shop_search.E003  an EmbeddingField's dimensions differ from the image model's
- shop_search.E004  the image and text models produce vectors of different sizes
- shop_search.E005  SHOP_SEARCH['INDEXING_MODE'] is not "sync" or "celery"
- shop_search.E010/E011  declarations (registry.py's): a field that does not
  exist, images that are not file fields
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import connections, models

from .conf import import_from_setting, shop_search_settings
from .registry import Declaration, searchable_models

MIN_PGVECTOR = (0, 7)
_FIX_SQL = "CREATE EXTENSION IF NOT EXISTS vector;"


@checks.register(checks.Tags.database)
def check_pgvector(databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for alias in databases or []:
        errors.extend(pgvector_messages(connections[alias], alias))
    return errors


def pgvector_messages(connection: Any, alias: str) -> list[checks.CheckMessage]:
    """The pgvector checks for one database connection."""
    if connection.vendor != "postgresql":
        return [
            checks.Error(
                f"Database {alias!r} is {connection.vendor}; shop_search needs "
                f"PostgreSQL with pgvector.",
                hint="Set DATABASES[...]['ENGINE'] to django.db.backends.postgresql.",
                id="shop_search.E001",
            )
        ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT default_version, installed_version FROM pg_available_extensions "
            "WHERE name = 'vector'"
        )
        row = cursor.fetchone()
    if row is None:
        return [
            checks.Error(
                f"The PostgreSQL server of database {alias!r} does not have the "
                f"pgvector extension installed.",
                hint="Install pgvector 0.7 or newer on the server (for example the "
                "postgresql-NN-pgvector package), then run migrate, or as a "
                f"superuser: {_FIX_SQL}",
                id="shop_search.E001",
            )
        ]
    errors: list[checks.CheckMessage] = []
    default_version, installed_version = row
    version = installed_version or default_version
    if _version_tuple(version) < MIN_PGVECTOR:
        errors.append(
            checks.Error(
                f"pgvector {version} in database {alias!r} is too old; shop_search "
                f"needs 0.7 or newer (halfvec, iterative index scans).",
                hint="Upgrade the pgvector package on the server, then run "
                "ALTER EXTENSION vector UPDATE;",
                id="shop_search.E002",
            )
        )
    if installed_version is None:
        errors.append(
            checks.Warning(
                f"The vector extension is not created in database {alias!r} yet.",
                hint=f"Run migrate (it runs {_FIX_SQL}), or as a superuser: {_FIX_SQL}",
                id="shop_search.W001",
            )
        )
    return errors


@checks.register()
def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    mode = shop_search_settings.INDEXING_MODE
    if mode not in ("sync", "celery"):
        return [
            checks.Error(
                f"SHOP_SEARCH['INDEXING_MODE'] is {mode!r}.",
                hint='Use "sync" (encode after commit, in-process) or "celery".',
                id="shop_search.E005",
            )
        ]
    return []


@checks.register()
def check_dimensions(**kwargs: Any) -> list[checks.CheckMessage]:
    """Compare field dimensions with the models' output, from config files only."""
    encoder_class = import_from_setting("ENCODER_CLASS")
    image_model = shop_search_settings.IMAGE_MODEL
    text_model = shop_search_settings.TEXT_MODEL
    image_dims = encoder_class.peek_dimensions(image_model)
    text_dims = encoder_class.peek_dimensions(text_model)
    errors: list[checks.CheckMessage] = []
    if image_dims and text_dims and image_dims != text_dims:
        errors.append(
            checks.Error(
                f"IMAGE_MODEL {image_model!r} makes {image_dims}-dimensional vectors "
                f"but TEXT_MODEL {text_model!r} makes {text_dims}; text queries "
                f"cannot be compared with product images.",
                hint="Use a text model trained into the image model's space, such as "
                "sentence-transformers/clip-ViT-B-32-multilingual-v1 for "
                "clip-ViT-B-32.",
                id="shop_search.E004",
            )
        )
    if image_dims:
        # Through the app registry: the models module runs these checks too.
        from django.apps import apps

        field = apps.get_model("shop_search", "ImageVector")._meta.get_field("vector")
        if field.dimensions != image_dims:
            errors.append(
                checks.Error(
                    f"shop_search stores {field.dimensions}-dimensional vectors but "
                    f"IMAGE_MODEL {image_model!r} makes {image_dims}-dimensional "
                    f"ones.",
                    hint=f"Use a CLIP model with {field.dimensions}-dimensional "
                    f"output (clip-ViT-B-32, clip-ViT-B-16), or leave IMAGE_MODEL "
                    f"at its default.",
                    id="shop_search.E003",
                )
            )
    return errors


@checks.register()
def check_declarations(**kwargs: Any) -> list[checks.CheckMessage]:
    """Every declared field of every searchable model exists (E010), and
    image paths end on file fields (E011)."""
    from .registry import declaration, inherits_base

    errors: list[checks.CheckMessage] = []
    for model in searchable_models():
        if not inherits_base(model):  # those check themselves (Model.check)
            errors.extend(check_declaration(declaration(model)))
    return errors


def check_declaration(decl: Declaration) -> list[checks.CheckMessage]:
    """System check messages for one declaration (E010, E011)."""
    model = decl.model
    errors: list[checks.CheckMessage] = []
    if not decl.images:
        errors.append(
            checks.Error(
                f"{model._meta.label} declares no images.",
                hint="Name its image field, or its gallery's file field: "
                "images=['image'] or images=['images__image'].",
                obj=model,
                id="shop_search.E011",
            )
        )
    fields = ", ".join(sorted(f.name for f in model._meta.get_fields()))
    for option, value, problem in field_problems(decl):
        errors.append(
            checks.Error(
                f"{model._meta.label}: {option} names {value!r}, which {problem}.",
                hint=f"Fields of {model.__name__}: {fields}.",
                obj=model,
                id="shop_search.E011" if option == "images" else "shop_search.E010",
            )
        )
    return errors


def field_problems(decl: Declaration) -> list[tuple[str, str, str]]:
    """(option, value, problem) for every declared name that does not resolve."""
    problems = []
    model = decl.model
    existing = {f.name for f in model._meta.get_fields()}
    named = [("text", n) for n in decl.text] + [
        ("identifiers", n) for n in decl.identifiers
    ]
    named += [("names", n) for n in decl.names or []]
    if decl.categories:
        named.append(("categories", decl.categories))
    if decl.parent:
        named.append(("parent", decl.parent))
    for option, name in named:
        if name.split("__")[0] not in existing:
            problems.append((option, name, "is not a field of " + model.__name__))
    for path in decl.images:
        try:
            gallery = decl.gallery(path)
            target_model, file_field = (
                (model, path) if gallery is None else (gallery[0], gallery[2])
            )
            target = target_model._meta.get_field(file_field)
        except (FieldDoesNotExist, AttributeError):
            problems.append(("images", path, "does not lead to a field"))
            continue
        if gallery is None and target.is_relation:
            problems.append(
                (
                    "images",
                    path,
                    f"is a {type(target).__name__}; for a gallery model name its "
                    f"file field too ('{path}__image')",
                )
            )
        elif not isinstance(target, models.FileField):
            problems.append(
                ("images", path, f"is a {type(target).__name__}, not an ImageField")
            )
    return problems


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
