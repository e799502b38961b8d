"""Encoders backed by sentence-transformers (CLIP image model, multilingual text)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..exceptions import EncodingError, ModelLoadError
from . import model_files, runtime
from .base import BaseEncoder
from .cached_onnx import CachedTowers, open_cached, write_record
from .onnx_backend import OnnxTower, OnnxUnavailable, cache_folder, load_tower
from .pixels import SquareInput
from .runtime import (
    PRECISIONS,
    Runtime,
    check_settings,
    choose_runtime,
    cpu_flags,
    min_cosine,
    onnxruntime_version,
    probe_inputs,
)
from .torch_backend import forward, modalities, prepare, quantize_int8

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["SentenceTransformerEncoder", "PRECISIONS"]

logger = logging.getLogger(__name__)


class SentenceTransformerEncoder(BaseEncoder):
    """
    Loads a sentence-transformers model by hub name or local path.

    The model is loaded on first use, once, under a lock. Weights come from the
    Hugging Face cache (``HF_HOME``); with ``HF_HUB_OFFLINE=1`` nothing is
    fetched. Calls to the model are serialized: tokenizers are not
    thread-safe, and on CPU a second concurrent forward pass gains nothing.

    At load, ``precision`` and ``backend`` ("auto" by default) are resolved to
    a :class:`~shop_search.encoders.runtime.Runtime` (``.runtime``), logged.
    An automatic reduced precision on torch is checked against fp32 on a fixed
    probe and vetoed (back to fp32, with a warning) if it drifts. On ONNX
    Runtime each tower (images, texts) is exported on its first use, cached
    and checked against torch fp32; if it cannot be had, the encoder falls
    back to torch with a warning. None of this changes ``model_id``.

    Where the settings resolve to ONNX Runtime on a CPU and the towers were
    exported and checked before, they are run from the cache without
    importing torch or sentence-transformers at all
    (:mod:`~shop_search.encoders.cached_onnx`): a process starts encoding in
    a second instead of several. The full model is loaded when it is needed
    after all (a tower not cached, ``.model``).
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
        super().__init__(
            model_name,
            device=device,
            batch_size=batch_size,
            precision=precision,
            backend=backend,
        )
        check_settings(precision, backend)
        self._model: Any = None
        self._runtime: Runtime | None = None
        self._towers: dict[str, OnnxTower] = {}
        self._square: SquareInput | None = None
        self._cached: CachedTowers | None = None
        self._loaded = False
        self._lock = threading.Lock()
        # Tokenizers are not thread-safe; preprocessing may overlap the model.
        self._preprocess_lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded torch model (also the preprocessing of the ONNX towers)."""
        self._load_once()
        if self._model is None:
            with self._lock:
                self._without_cache()
        return self._model

    @property
    def runtime(self) -> Runtime:
        """The backend and precision the vectors come from (loads the model)."""
        self._load_once()
        assert self._runtime is not None
        return self._runtime

    def _load_once(self) -> Any:
        """The torch model, or None while cached ONNX towers serve."""
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._cached = open_cached(
                        self.model_name,
                        precision=self.precision,
                        backend=self.backend,
                        device=self.device,
                    )
                    if self._cached is None:
                        self._model = self._load()
                    else:
                        self._square = self._cached.square
                        self._set_runtime(self._cached.runtime)
                    self._loaded = True
        return self._model

    def _without_cache(self) -> None:
        """Load the full model (under ``_lock``): a cached tower cannot serve."""
        if self._model is None:
            self._model = self._load()
        self._cached = None

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelLoadError(
                f"Cannot load {self.model_name!r}: sentence-transformers is not "
                f"installed ({exc}). Fix: pip install sentence-transformers torch."
            ) from exc
        logger.info("Loading embedding model %s", self.model_name)
        try:
            model = SentenceTransformer(self.model_name, device=self.device)
        except Exception as exc:  # noqa: BLE001 - every cause gets the same advice
            raise ModelLoadError(self._load_advice(exc)) from exc
        model.eval()
        chosen = choose_runtime(
            self.precision,
            self.backend,
            device_type=model.device.type,
            flags=cpu_flags(),
            onnx_version=None if self.backend == "torch" else onnxruntime_version(),
        )
        if chosen.backend == "torch":
            model, chosen = self._with_precision(model, chosen)
        self._set_runtime(chosen)
        if "image" in modalities(model):
            processor = getattr(model[0], "processor", None)
            self._square = SquareInput.of(processor) if processor else None
        return model

    def _set_runtime(self, chosen: Runtime) -> None:
        self._runtime = chosen
        log = logger.warning if chosen.fallback else logger.info
        log("%s runs on %s", self.model_name, chosen)

    def _with_precision(self, model: Any, chosen: Runtime) -> tuple[Any, Runtime]:
        """
        ``model`` at ``chosen.precision`` on torch. A precision chosen by
        "auto" must keep the probe's vectors within ``PRECISION_TOLERANCE`` of
        fp32, else the model stays fp32 (a warning says so).
        """
        precision = chosen.precision
        if precision == "fp32":
            return model, chosen
        if not chosen.automatic:
            if precision == "int8":
                model = quantize_int8(model, self.model_name, inplace=True)
            return model, chosen
        probed = modalities(model)
        expected = {
            m: self._torch_vectors(model, probe_inputs(m), m, "fp32") for m in probed
        }
        try:
            candidate = (
                quantize_int8(model, self.model_name, inplace=False)
                if precision == "int8"
                else model
            )
        except ModelLoadError as exc:
            return model, self._fp32_instead(chosen, str(exc))
        cosine = min(
            min_cosine(
                expected[m],
                self._torch_vectors(candidate, probe_inputs(m), m, precision),
            )
            for m in probed
        )
        if cosine < runtime.PRECISION_TOLERANCE:
            return model, self._fp32_instead(
                chosen,
                f"{precision} drifts from fp32 on the probe (cosine {cosine:.5f} "
                f"< {runtime.PRECISION_TOLERANCE})",
            )
        return candidate, replace(
            chosen, reason=f"{chosen.reason}; probe cosine {cosine:.5f} vs fp32"
        )

    @staticmethod
    def _fp32_instead(chosen: Runtime, why: str) -> Runtime:
        return replace(
            chosen, precision="fp32", reason=f"{why}; {chosen.reason}", fallback=True
        )

    def _load_advice(self, exc: Exception) -> str:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        return (
            f"Could not load embedding model {self.model_name!r}: "
            f"{type(exc).__name__}: {exc}. "
            "Fix: point the setting at a local folder that holds the model "
            "(SHOP_SEARCH = {'IMAGE_MODEL': '/srv/models/clip-ViT-B-32', ...}), or "
            "download it once on a machine with network access "
            f'(python -c "from sentence_transformers import SentenceTransformer; '
            f"SentenceTransformer('{self.model_name}')\") and copy the Hugging Face "
            "cache (~/.cache/huggingface, or HF_HOME) to this server"
            + (
                "; HF_HUB_OFFLINE=1 is set, so only the cache is used."
                if offline
                else "; then set HF_HUB_OFFLINE=1 so the server never waits on "
                "the network."
            )
        )

    @property
    def dimensions(self) -> int:
        self._load_once()
        if self._cached is not None:
            return self._cached.dimensions
        model = self.model
        # sentence-transformers 6 renamed get_sentence_embedding_dimension().
        getter = getattr(model, "get_embedding_dimension", None)
        if getter is None:
            getter = model.get_sentence_embedding_dimension
        dimensions = getter()
        if dimensions is None:
            dimensions = int(self.encode_texts(["a"]).shape[1])
        return int(dimensions)

    @property
    def image_size(self) -> int | None:
        """
        The side of the square a CLIP-style image model looks at (loads the
        model); None for models with other preprocessing.
        """
        self._load_once()
        return self._square.size if self._square else None

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        from ..images import letterbox

        self._load_once()
        if self._square is None:
            images = [letterbox(image) for image in images]
        return self._encode(list(images), "image")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._load_once()
        return self._encode(list(texts), "text")

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Any]:
        """
        The model's preprocessing of one batch: the features
        :meth:`encode_features` takes. Images of a CLIP-style model become
        its ``pixel_values`` in one resize each (see
        :class:`~shop_search.encoders.pixels.SquareInput`); texts, and images
        of other models (letterboxed by the caller), go through the model's
        own tokenizer or processor, under a lock of their own, so a pipeline
        can prepare the next batch while the model runs.
        """
        from PIL import Image

        model = self._load_once()
        images = all(isinstance(item, Image.Image) for item in inputs)
        if self._cached is not None:
            modality = "image" if images else "text"
            with self._lock:
                cached = self._cached
                if cached is None or not cached.tower(modality):
                    self._without_cache()
                    cached, model = None, self._model
            if cached is not None:
                return cached.preprocess(inputs, modality)
        if self._square is not None and images:
            return {
                "pixel_values": self._square.pixel_values(inputs),
                "modality": "image",
            }
        with self._preprocess_lock:
            return prepare(model, inputs)

    def encode_features(self, features: dict[str, Any], modality: str) -> np.ndarray:
        """
        The forward pass alone, on the runtime in use, for one batch from
        :meth:`preprocess` of ``modality`` ("image" or "text"): L2-normalized
        float32 rows.
        """
        self._load_once()
        with self._lock:
            cached = self._cached and self._cached.tower(modality)
            if cached:
                return cached.run(features)
            self._without_cache()
            tower = self._tower(modality)
            if tower is not None:
                return tower.run(features)
            assert self._runtime is not None
            return forward(self._model, features, self._runtime.precision)

    def _encode(self, inputs: list[Any], modality: str) -> np.ndarray:
        import numpy as np

        if not inputs:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        try:
            vectors = self._batched(
                inputs,
                modality,
                lambda chunk: self.encode_features(self.preprocess(chunk), modality),
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise EncodingError(
                f"Model {self.model_name!r} failed to encode {len(inputs)} input(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _batched(
        self,
        inputs: Sequence[Any],
        modality: str,
        encode: Callable[[list[Any]], np.ndarray],
    ) -> np.ndarray:
        """``encode`` applied per batch of ``batch_size``, rows in input order."""
        import numpy as np

        order = np.arange(len(inputs))
        if modality == "text" and len(inputs) > self.batch_size:
            # Batches of similar lengths pad less. In tokens, not characters
            # (as sentence-transformers sorts): a name in Chinese is short in
            # characters, not in tokens, and the demo's names padded by a
            # quarter when sorted by characters, 6% by tokens.
            order = np.argsort(
                [-length for length in self._token_counts(inputs)], kind="stable"
            )
        splits = range(self.batch_size, len(order), self.batch_size)
        parts = [
            encode([inputs[i] for i in chunk])
            for chunk in np.array_split(order, splits)
        ]
        stacked = np.concatenate(parts)
        vectors = np.empty_like(stacked)
        vectors[order] = stacked
        return vectors

    def _token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text where the tokenizer is at hand, else characters."""
        cached = self._cached
        if cached is not None and "text" in cached.records:
            with self._preprocess_lock:
                return cached.token_counts(texts)
        tokenizer = getattr(self._model, "tokenizer", None)
        if tokenizer is not None and getattr(tokenizer, "is_fast", False):
            with self._preprocess_lock:
                encoded = tokenizer(list(texts), truncation=True)
                return [len(ids) for ids in encoded["input_ids"]]
        return [len(text) for text in texts]

    def _torch_vectors(
        self, model: Any, inputs: Sequence[Any], modality: str, precision: str
    ) -> np.ndarray:
        """``inputs`` through ``model`` on torch at ``precision`` (for probes)."""

        def encode(chunk: list[Any]) -> np.ndarray:
            with self._preprocess_lock:
                features = prepare(model, chunk)
            return forward(model, features, precision)

        return self._batched(inputs, modality, encode)

    def _tower(self, modality: str) -> OnnxTower | None:
        """The ONNX tower for ``modality`` (built on first use); ``None``: torch."""
        assert self._runtime is not None
        if self._runtime.backend != "onnx":
            return None
        tower = self._towers.get(modality)
        if tower is None:
            import torch

            model = self._model
            source = model_files.local_folder(self.model_name)
            folder = cache_folder(self.model_name, source)
            try:
                tower = load_tower(
                    model,
                    folder,
                    modality,
                    self._runtime.precision,
                    reference=lambda x: self._torch_vectors(model, x, modality, "fp32"),
                    preprocess=lambda x: prepare(model, x),
                    threads=torch.get_num_threads(),
                )
            except OnnxUnavailable as exc:
                self._fall_back_to_torch(f"ONNX Runtime unavailable: {exc}")
                return None
            self._towers[modality] = tower
            # The next process can run this tower without torch.
            with self._preprocess_lock:
                write_record(
                    folder, source, modality, model, tower.reference, self._square
                )
        return tower

    def _fall_back_to_torch(self, why: str) -> None:
        assert self._runtime is not None
        chosen = choose_runtime(
            self.precision,
            "torch",
            device_type=self._model.device.type,
            flags=cpu_flags(),
            onnx_version=None,
        )
        self._model, chosen = self._with_precision(self._model, chosen)
        self._towers.clear()
        self._set_runtime(
            replace(chosen, reason=f"{why}; {chosen.reason}", fallback=True)
        )

    @classmethod
    def peek_dimensions(cls, model_name: str) -> int | None:
        return model_files.peek_dimensions(model_name)
