"""The encoder contract shared by every embedding backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["BaseEncoder"]


class BaseEncoder:
    """
    Turns product images or query texts into vectors of one shared space.

    One instance wraps one model. Implementations must:

    - load the model lazily or in ``__init__`` and raise
      :class:`~shop_search.exceptions.ModelLoadError` naming the model, the
      cause and the fix when it cannot be loaded;
    - return ``numpy.ndarray`` of shape ``(len(inputs), dimensions)``, dtype
      float32, every row L2-normalized;
    - be safe to call from several threads.

    ``precision`` and ``backend`` come from ``SHOP_SEARCH['PRECISION']`` and
    ``['BACKEND']`` ("auto" by default); an encoder may run its model however
    it likes as long as the vectors stay within cosine 0.995 of fp32. They
    never change ``model_id``: stored vectors stay valid across them.
    """

    def __init__(
        self,
        model_name: str,
        *,
        device: str | None = None,
        batch_size: int = 32,
        precision: str = "auto",
        backend: str = "auto",
    ) -> None:
        self.model_name = model_name
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.backend = backend

    @property
    def model_id(self) -> str:
        """Identifies the model in ``search_model``; a change makes vectors stale."""
        return self.model_name

    @property
    def dimensions(self) -> int:
        """Length of the vectors this encoder returns."""
        raise NotImplementedError(".dimensions must be implemented.")

    @property
    def image_size(self) -> int | None:
        """
        The side of the centre square the image model looks at, when it
        looks at one (CLIP: 224), else None (the default). Indexing then
        decodes product images straight to that square
        (:func:`~shop_search.encoders.pixels.decode_batch`), and
        :meth:`encode_images` must give such an image the vector it gives the
        full image.
        """
        return None

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode RGB Pillow images; one row per image."""
        raise NotImplementedError(".encode_images() must be implemented.")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts; one row per text."""
        raise NotImplementedError(".encode_texts() must be implemented.")

    @classmethod
    def peek_dimensions(cls, model_name: str) -> int | None:
        """
        The output dimension read from the model's files without loading weights,
        or ``None`` when it cannot be known cheaply (used by system checks).
        """
        return None
