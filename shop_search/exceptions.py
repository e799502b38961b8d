"""Exceptions raised by shop_search. All derive from :class:`ShopSearchError`."""

__all__ = [
    "ShopSearchError",
    "ModelLoadError",
    "ImageError",
    "EncodingError",
    "SearchBusy",
    "http_status",
]


class ShopSearchError(Exception):
    """Base class for shop_search errors. ``code`` is stable and machine-readable."""

    code = "shop_search_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ModelLoadError(ShopSearchError):
    """An embedding model could not be loaded (missing, offline, corrupt)."""

    code = "model_unavailable"


class ImageError(ShopSearchError):
    """An image was refused: too large, unsupported, corrupt, unreadable."""

    code = "invalid_image"


class EncodingError(ShopSearchError):
    """The encoder failed on otherwise valid input."""

    code = "encoding_failed"


class SearchBusy(ShopSearchError):
    """Too many searches are waiting for the encoders; try again shortly."""

    code = "busy"


#: Refusals answered with another status than 400, by ``code``.
_STATUS = {
    "length_required": 411,
    "image_too_large": 413,
    "image_too_many_pixels": 413,
    "image_too_complex": 413,
}


def http_status(exc: ShopSearchError) -> int:
    """The HTTP status the API and the page both answer ``exc`` with."""
    if isinstance(exc, (ModelLoadError, SearchBusy)):
        return 503
    return _STATUS.get(exc.code, 400)
