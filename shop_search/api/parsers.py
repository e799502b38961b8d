"""Request parsers that answer bad bodies with 400, never 500."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

__all__ = ["SafeJSONParser"]


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with deeply nested bodies refused as a parse error
    (Python's ``json`` raises RecursionError on them)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(
                "JSON parse error - the body is nested too deeply."
            ) from exc
