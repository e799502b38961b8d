"""Multilingual, image-aware product search for Django shops (PostgreSQL, pgvector)."""

__version__ = "0.1.0"

__all__ = ["register", "unregister", "__version__"]


def register(model, **options):  # type: ignore[no-untyped-def]
    """Make a model searchable without changing it: see
    :func:`shop_search.registry.register`."""
    from .registry import register as _register

    _register(model, **options)


def unregister(model):  # type: ignore[no-untyped-def]
    """Undo :func:`register`."""
    from .registry import unregister as _unregister

    _unregister(model)
