"""
Upload size limits applied before an upload is read.

``limit_upload_size(request)`` refuses a request whose ``Content-Length``
exceeds ``MAX_IMAGE_BYTES`` (plus room for the multipart envelope), and
installs an upload handler that stops a file as soon as it passes the limit
while it streams (a body whose length the envelope's allowance let pass).
Both raise :class:`~shop_search.exceptions.ImageError` with code
``image_too_large`` (HTTP 413). A body sent without a length (HTTP/1.1
chunked) is refused with code ``length_required`` (HTTP 411): Django, as
WSGI, reads no body without a ``Content-Length``, and would report a
missing file.
"""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest

from .conf import shop_search_settings
from .exceptions import ImageError

__all__ = ["limit_upload_size", "LimitedUploadHandler"]

# Multipart boundaries, headers and small form fields around the image.
ENVELOPE_BYTES = 64 * 1024


def _too_large(limit: int) -> ImageError:
    return ImageError(
        f"The upload is larger than {limit:,} bytes (SHOP_SEARCH['MAX_IMAGE_BYTES']).",
        code="image_too_large",
    )


class LimitedUploadHandler(FileUploadHandler):
    """Stops reading an upload as soon as it is larger than the limit."""

    def __init__(self, request: HttpRequest | None = None, limit: int = 0) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            raise _too_large(self.limit)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def limit_upload_size(request: HttpRequest) -> None:
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    limit = int(shop_search_settings.MAX_IMAGE_BYTES)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and not length:
        raise ImageError(
            "Send the upload with a Content-Length header: a chunked body is not read.",
            code="length_required",
        )
    if length > limit + ENVELOPE_BYTES:
        raise _too_large(limit)
    if not hasattr(request, "_files"):
        request.upload_handlers.insert(0, LimitedUploadHandler(request, limit))
