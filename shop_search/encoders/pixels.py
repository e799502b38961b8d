"""
An image model's input, made in one resize: the square view of each image,
normalised into the float32 array the model (torch or ONNX Runtime) takes;
and the decoding of a batch of product images, in parallel, at the size the
model needs.

CLIP's own processor (transformers' ``CLIPImageProcessor``) scales the
shorter side to 224 pixels, crops the centre square, rescales and normalises,
through several copies of each image and a Python loop per batch. Here the
centre square is resized straight to 224x224 (Pillow's ``resize`` with a
``box``, bicubic like CLIP's), and one vectorised pass normalises the batch:
the same pixels within float rounding, at a fraction of the cost. Models
whose processor does something else keep their own preprocessing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import ImageError
from ..images import ENCODING_SIZE, letterbox, load_image

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["SquareInput", "decode_batch", "square_view"]

# PIL's BICUBIC, the resampling filter CLIP's processor is configured with.
_BICUBIC = 3


def square_view(image: Image.Image, size: int) -> Image.Image:
    """
    What a CLIP-style model sees of ``image``, as a ``size`` x ``size`` RGB
    image: long images padded with white to 2:1 (see
    :func:`~shop_search.images.letterbox`), then the centre square, resized
    once (bicubic, averaging what it drops).
    """
    from PIL import Image

    image = letterbox(image)
    width, height = image.size
    if (width, height) == (size, size):
        return image
    side = min(width, height)
    box = (
        (width - side) / 2,
        (height - side) / 2,
        (width + side) / 2,
        (height + side) / 2,
    )
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)


@dataclass(frozen=True)
class SquareInput:
    """
    The preprocessing of a model that looks at a centre square of ``size``
    pixels, rescaled to 0-1 and normalised with ``mean`` and ``std`` per
    channel (CLIP and its relatives).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, processor: Any) -> SquareInput | None:
        """
        The square input of a transformers image ``processor`` (or a processor
        holding one as ``image_processor``), or None when it does anything
        else: then only the processor itself gives the model's input.
        """
        processor = getattr(processor, "image_processor", processor)
        size = _get(getattr(processor, "size", None), "shortest_edge")
        crop = getattr(processor, "crop_size", None)
        mean = tuple(getattr(processor, "image_mean", None) or ())
        std = tuple(getattr(processor, "image_std", None) or ())
        if not (
            getattr(processor, "do_resize", False)
            and getattr(processor, "do_center_crop", False)
            and getattr(processor, "do_rescale", False)
            and getattr(processor, "do_normalize", False)
            and isinstance(size, int)
            and _get(crop, "height") == size
            and _get(crop, "width") == size
            and abs(float(getattr(processor, "rescale_factor", 0)) - 1 / 255) < 1e-9
            and _is_bicubic(getattr(processor, "resample", None))
            and len(mean) == 3
            and len(std) == 3
            and not getattr(processor, "do_pad", False)
        ):
            return None
        return cls(size, mean, std)  # type: ignore[arg-type]

    def pixel_values(self, images: Sequence[Image.Image]) -> np.ndarray:
        """
        ``images`` (RGB) as the model's ``pixel_values``: float32, shape
        (n, 3, size, size). Images already ``size`` x ``size`` (from
        :func:`decode_batch`) are taken as they are.
        """
        import numpy as np

        size = self.size
        batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            if image.mode != "RGB":
                image = image.convert("RGB")
            batch[i] = np.asarray(square_view(image, size))
        # x / 255 - mean) / std as one multiply-add per channel, written
        # straight into the channels-first array the model takes.
        scale = [1 / (255 * s) for s in self.std]
        shift = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        pixels = np.empty((len(images), 3, size, size), dtype=np.float32)
        for channel in range(3):
            plane = pixels[:, channel]
            np.multiply(batch[..., channel], np.float32(scale[channel]), out=plane)
            plane += np.float32(shift[channel])
        return pixels


def _is_bicubic(resample: Any) -> bool:
    """Whether a processor's ``resample`` (PIL's code, or an enum of it) is bicubic."""
    try:
        return int(getattr(resample, "value", resample)) == _BICUBIC
    except (TypeError, ValueError):
        return False


def _get(value: Any, key: str) -> Any:
    """``value[key]`` of a size dict (or transformers' ``SizeDict``), or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(key)
    return getattr(value, key, None)


def decode_batch(
    sources: Sequence[Any],
    *,
    size: int | None = None,
    workers: int | None = None,
) -> list[Image.Image | ImageError]:
    """
    Decode product images (anything :func:`~shop_search.images.load_image`
    opens), in input order, an :class:`~shop_search.exceptions.ImageError`
    in place of each image that cannot be loaded.

    With ``size`` (the model's input side, ``encoder.image_size``), each image
    comes back as its :func:`square_view`: a JPEG decoded at the smallest
    scale that keeps ``size`` pixels, then resized once, so the encoder only
    normalises it. Without, images come at ``ENCODING_SIZE`` for the model's
    own preprocessing.

    ``workers`` threads decode at once (default: one per CPU core; Pillow
    releases the GIL while it decodes and resizes).
    """
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(sources)))

    def decode(source: Any) -> Image.Image | ImageError:
        try:
            if size is None:
                return load_image(source, max_side=ENCODING_SIZE)
            return square_view(load_image(source, min_side=size), size)
        except ImageError as exc:
            return exc

    if workers == 1:
        return [decode(source) for source in sources]
    with ThreadPoolExecutor(workers, thread_name_prefix="shop_search-decode") as pool:
        return list(pool.map(decode, sources))
