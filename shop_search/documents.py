"""
A product's own words as shop_search searches them: the declared text,
name and identifier fields read from the product and folded (lower case,
accents removed), so that "Café" and "cafe", "Größe" and "grosse" meet. The
same folding is applied to queries. Pure functions: writing documents is
:func:`shop_search.indexing.index_documents`.

Declared on the product model (or its registration)::

    search_text_fields = ["name", "name_translations", "description"]
    search_name_fields = ["name", "name_translations"]  # default: the first
    search_identifier_fields = ["sku", "gtin"]

A field may be a string, a dict of translations (``{"de": "Kleid"}``: every
value counts), a list, or a path through relations (``"brand__name"``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = ["Document", "WORD", "build", "fold", "tokens", "name_fields"]

# German sharp s and ligatures that NFKD does not split.
_SPECIAL = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l"})
#: A word as the search cuts text (hyphenated words stay whole).
WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)


def fold(text: str) -> str:
    """Lower case without accents: "Größe à Pois" -> "grosse a pois"."""
    text = unicodedata.normalize("NFKD", str(text).casefold().translate(_SPECIAL))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """The folded words of ``text`` (hyphenated words stay whole)."""
    return WORD.findall(fold(text))


@dataclass(frozen=True)
class Document:
    """What :class:`~shop_search.models.SearchDocument` stores for a product."""

    title: str
    names: str
    body: str
    identifiers: list[str]

    @property
    def digest(self) -> str:
        raw = "\x1f".join([self.title, self.names, self.body, *self.identifiers])
        return hashlib.md5(raw.encode()).hexdigest()


def name_fields(model: type) -> list[str]:
    from .registry import declaration

    return declaration(model).name_fields


def build(product: Any) -> Document:
    """The document of ``product`` from its declared fields."""
    from .registry import declaration

    decl = declaration(type(product))
    names = decl.name_fields
    name_values = [v for f in names for v in _values(product, f)]
    text_fields = [f for f in decl.text if f not in names]
    body_values = [v for f in text_fields for v in _values(product, f)]
    identifiers = [
        fold(v).upper().strip()
        for f in decl.identifiers
        for v in _values(product, f)
        if v.strip()
    ]
    title = name_values[0] if name_values else str(product)
    return Document(
        title=title[:255],
        names="\n".join(fold(v) for v in _unique(name_values)),
        body="\n".join(fold(v) for v in _unique(body_values)),
        identifiers=sorted(set(identifiers)),
    )


def _values(obj: Any, path: str) -> list[str]:
    """The strings a declared field holds (through ``__`` relations)."""
    values: list[Any] = [obj]
    for part in path.split("__"):
        following = []
        for value in values:
            attribute = getattr(value, part, None)
            if hasattr(attribute, "all") and callable(attribute.all):
                following.extend(attribute.all())  # a to-many relation
            elif attribute is not None:
                following.append(attribute)
        values = following
    strings: list[str] = []
    for value in values:
        if isinstance(value, dict):
            strings.extend(str(v) for v in value.values() if isinstance(v, str) and v)
        elif isinstance(value, (list, tuple)):
            strings.extend(str(v) for v in value if v)
        elif value != "":
            strings.append(str(value))
    return strings


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))
