"""Encoders backed by sentence-transformers (CLIP image model, multilingual text)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import EncodingError, ModelLoadError
from . import runtime
from .base import BaseEncoder
from .onnx_backend import OnnxTower, OnnxUnavailable, cache_folder, load_tower
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
        self._lock = threading.Lock()
        # Tokenizers are not thread-safe; preprocessing may overlap the model.
        self._preprocess_lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded torch model (also the preprocessing of the ONNX towers)."""
        return self._load_once()

    @property
    def runtime(self) -> Runtime:
        """The backend and precision the vectors come from (loads the model)."""
        self._load_once()
        assert self._runtime is not None
        return self._runtime

    def _load_once(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

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
        model = self.model
        # sentence-transformers 6 renamed get_sentence_embedding_dimension().
        getter = getattr(model, "get_embedding_dimension", None)
        if getter is None:
            getter = model.get_sentence_embedding_dimension
        dimensions = getter()
        if dimensions is None:
            dimensions = int(self.encode_texts(["a"]).shape[1])
        return int(dimensions)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        from ..images import letterbox

        return self._encode([letterbox(image) for image in images], "image")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), "text")

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Any]:
        """
        The model's own preprocessing of one batch (tokenizer, or image
        processor for images already letterboxed): the features
        :meth:`encode_features` takes. It runs under its own lock, so a
        pipeline can prepare the next batch while the model runs.
        """
        model = self._load_once()
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
        if modality == "text":
            # Batches of similar lengths pad less (sentence-transformers does too).
            order = np.argsort([-len(text) for text in inputs], kind="stable")
        splits = range(self.batch_size, len(order), self.batch_size)
        parts = [
            encode([inputs[i] for i in chunk])
            for chunk in np.array_split(order, splits)
        ]
        stacked = np.concatenate(parts)
        vectors = np.empty_like(stacked)
        vectors[order] = stacked
        return vectors

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
            try:
                tower = load_tower(
                    model,
                    cache_folder(self.model_name, _local_folder(self.model_name)),
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
        folder = _local_folder(model_name)
        if folder is None:
            return None
        try:
            modules = json.loads((folder / "modules.json").read_text())
        except (OSError, ValueError):
            return None
        for module in reversed(modules):
            try:
                config = json.loads(
                    (folder / module["path"] / "config.json").read_text()
                )
            except (OSError, ValueError, KeyError):
                continue
            for key in ("out_features", "projection_dim"):
                if isinstance(config.get(key), int):
                    return config[key]
        return None


def _local_folder(model_name: str) -> Path | None:
    """The folder holding ``model_name``: a local path, or the hub cache if present."""
    path = Path(model_name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for repo_id in (model_name, f"sentence-transformers/{model_name}"):
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached, or not a valid repo id
            continue
    return None
