"""Multilingual, image-aware product search for Django shops (PostgreSQL, pgvector)."""

__version__ = "0.1.0"
