"""
Detectors find the items in a photo for "shop the look".

A detector takes an RGB image and the shop's categories and returns
:class:`Detection` boxes labelled with a category. Choose one with
``SHOP_SEARCH['DETECTOR_CLASS']``:

- :class:`CropDetector` (default, no extra model): region proposals from
  multi-scale crops, each scored by the CLIP models against the category
  prompts (and a "background" class), merged by non-maximum suppression.
- :class:`OwlVitDetector`: open-vocabulary detection with OWL-ViT
  (``DETECTOR_MODEL``, default ``google/owlvit-base-patch32``) through
  transformers, queried with the category prompts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .conf import import_from_setting, shop_search_settings
from .exceptions import ModelLoadError

__all__ = [
    "Detection",
    "BaseDetector",
    "CropDetector",
    "OwlVitDetector",
    "get_detector",
    "non_max_suppression",
]

Box = tuple[float, float, float, float]


@dataclass
class Detection:
    """An item found in the image: box (x0, y0, x1, y1 in pixels), category, score."""

    box: Box
    category: Any
    score: float


class BaseDetector:
    """
    Contract: ``detect(image, categories, serving)`` returns at most
    ``DETECTION_MAX_ITEMS`` detections with score >= ``DETECTION_MIN_SCORE``,
    best first; boxes lie inside the image. ``serving``
    (:class:`~shop_search.switching.Serving`) gives the encoders of the models
    that serve searches. Must be thread-safe.
    """

    def detect(
        self, image: Image.Image, categories: list[Any], serving: Any
    ) -> list[Detection]:
        raise NotImplementedError(".detect() must be implemented.")


def iou(a: Box, b: Box) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def non_max_suppression(
    detections: list[Detection], *, threshold: float = 0.4
) -> list[Detection]:
    """Keep the best box of each overlapping group (IoU > threshold)."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if all(iou(detection.box, other.box) <= threshold for other in kept):
            kept.append(detection)
    return kept


class CropDetector(BaseDetector):
    """Multi-scale crops scored against the category prompts with CLIP."""

    #: window size as a fraction of the image side, and the step between windows
    scales: tuple[tuple[float, float], ...] = ((0.4, 0.2), (0.55, 0.225), (0.75, 0.25))

    def proposals(self, width: int, height: int) -> list[Box]:
        boxes: list[Box] = []
        for size, step in self.scales:
            w, h = width * size, height * size
            xs = _positions(width, w, width * step)
            ys = _positions(height, h, height * step)
            boxes.extend((x, y, x + w, y + h) for y in ys for x in xs)
        # full-width bands: tops and bottoms of outfits
        for top, bottom in ((0.0, 0.5), (0.25, 0.75), (0.5, 1.0)):
            boxes.append((0.0, height * top, float(width), height * bottom))
        return boxes

    def detect(
        self, image: Image.Image, categories: list[Any], serving: Any
    ) -> list[Detection]:
        from .categories import category_matrix

        if not categories:
            return []
        boxes = self.proposals(*image.size)
        crops = [image.crop(tuple(round(v) for v in box)) for box in boxes]
        crop_vectors = serving.image_encoder.encode_images(crops)
        classes = category_matrix(categories, serving.text_encoder)
        background_prompts = shop_search_settings.DETECTION_BACKGROUND_PROMPTS
        if background_prompts:
            background = serving.text_encoder.encode_texts(background_prompts).mean(
                axis=0
            )
            background /= max(float(np.linalg.norm(background)), 1e-12)
            classes = np.vstack([classes, background[None, :]])
        logits = crop_vectors @ classes.T * shop_search_settings.CATEGORY_LOGIT_SCALE
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        minimum = shop_search_settings.DETECTION_MIN_SCORE
        found = [
            Detection(box, categories[int(label)], float(probabilities[i, label]))
            for i, (box, label) in enumerate(zip(boxes, best, strict=True))
            if label < len(categories) and probabilities[i, label] >= minimum
        ]
        kept = non_max_suppression(found)
        return kept[: shop_search_settings.DETECTION_MAX_ITEMS]


def _positions(total: float, window: float, step: float) -> list[float]:
    positions, x = [], 0.0
    while x + window < total - 1e-6:
        positions.append(x)
        x += step
    positions.append(total - window)
    return sorted(set(round(p, 3) for p in positions))


class OwlVitDetector(BaseDetector):
    """
    OWL-ViT open-vocabulary detection, queried with "a photo of a {category}".

    Loads ``DETECTOR_MODEL`` (hub name or local folder) with transformers on
    first use, once per process.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        name = shop_search_settings.DETECTOR_MODEL
        with self._lock:
            if name not in self._loaded:
                try:
                    from transformers import OwlViTForObjectDetection, OwlViTProcessor

                    processor = OwlViTProcessor.from_pretrained(name)
                    model = OwlViTForObjectDetection.from_pretrained(name).eval()
                except Exception as exc:  # noqa: BLE001
                    raise ModelLoadError(
                        f"Could not load detector model {name!r}: {exc}. Fix: set "
                        f"SHOP_SEARCH['DETECTOR_MODEL'] to a local folder with the "
                        f"model, or download it once with network access; or use "
                        f"the default CropDetector."
                    ) from exc
                self._loaded = {name: (processor, model)}
            return self._loaded[name]

    def detect(
        self, image: Image.Image, categories: list[Any], serving: Any
    ) -> list[Detection]:
        import torch

        if not categories:
            return []
        processor, model = self._load()
        template = shop_search_settings.CATEGORY_PROMPTS.get("en", "{}")
        queries = [template.format(str(category)) for category in categories]
        with self._lock, torch.inference_mode():
            inputs = processor(
                text=[queries],
                images=image,
                return_tensors="pt",
                padding="max_length",
                truncation=True,
            )
            outputs = model(**inputs)
            target = torch.tensor([[image.height, image.width]])
            result = processor.post_process_grounded_object_detection(
                outputs=outputs,
                target_sizes=target,
                threshold=shop_search_settings.DETECTION_MIN_SCORE,
            )[0]
        found = []
        for box, score, label in zip(
            result["boxes"].tolist(),
            result["scores"].tolist(),
            result["labels"].tolist(),
            strict=True,
        ):
            x0, y0, x1, y1 = box
            clipped = (
                max(0.0, x0),
                max(0.0, y0),
                min(float(image.width), x1),
                min(float(image.height), y1),
            )
            if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                found.append(Detection(clipped, categories[int(label)], float(score)))
        return non_max_suppression(found)[: shop_search_settings.DETECTION_MAX_ITEMS]


_detectors: dict[str, BaseDetector] = {}
_detector_lock = threading.Lock()


def get_detector() -> BaseDetector:
    """The process-wide detector of ``DETECTOR_CLASS``."""
    path = shop_search_settings.DETECTOR_CLASS
    with _detector_lock:
        if path not in _detectors:
            _detectors[path] = import_from_setting("DETECTOR_CLASS")()
        return _detectors[path]
