"""Encoders backed by sentence-transformers (CLIP image model, multilingual text)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import EncodingError, ModelLoadError
from .base import BaseEncoder

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["SentenceTransformerEncoder", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16", "int8")

logger = logging.getLogger(__name__)


class SentenceTransformerEncoder(BaseEncoder):
    """
    Loads a sentence-transformers model by hub name or local path.

    The model is loaded on first use, once, under a lock. Weights come from the
    Hugging Face cache (``HF_HOME``); with ``HF_HUB_OFFLINE=1`` nothing is
    fetched. Calls to the model are serialized: tokenizers are not
    thread-safe, and on CPU a second concurrent forward pass gains nothing.
    """

    def __init__(
        self,
        model_name: str,
        *,
        device: str | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> None:
        super().__init__(
            model_name, device=device, batch_size=batch_size, precision=precision
        )
        if precision not in PRECISIONS:
            raise ModelLoadError(
                f"SHOP_SEARCH['PRECISION'] is {precision!r}; use 'fp32', 'bf16' "
                "or 'int8'."
            )
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
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
        if self.precision == "int8":
            model = _quantize_int8(model, self.model_name)
        return model

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

        return self._encode([letterbox(image) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts))

    def _encode(self, inputs: list[Any]) -> np.ndarray:
        import numpy as np

        model = self.model
        if not inputs:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        try:
            with self._lock, self._precision_context(model):
                vectors = model.encode(
                    inputs,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        except Exception as exc:  # noqa: BLE001
            raise EncodingError(
                f"Model {self.model_name!r} failed to encode {len(inputs)} input(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _precision_context(self, model: Any) -> Any:
        import contextlib

        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(model.device.type, dtype=torch.bfloat16)

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


def _quantize_int8(model: Any, model_name: str) -> Any:
    """
    Dynamic int8 quantization of the model's linear layers (weights stored as
    int8, activations quantized per call): a quarter of the weight memory to
    read per query, which is what bounds a short text query on a CPU.
    """
    import warnings

    import torch

    if model.device.type != "cpu":
        raise ModelLoadError(
            f"PRECISION 'int8' runs on the CPU only; {model_name!r} is on "
            f"{model.device}. Use 'bf16' or 'fp32' on a GPU."
        )
    quantize = getattr(
        getattr(torch.ao, "quantization", None), "quantize_dynamic", None
    )
    if quantize is None:
        raise ModelLoadError(
            f"PRECISION 'int8' needs torch.ao.quantization.quantize_dynamic, which "
            f"torch {torch.__version__} does not have. Use 'fp32' or 'bf16'."
        )
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated in favour of torchao;
        # it still works, and is checked against fp32 by the tests.
        warnings.simplefilter("ignore")
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


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
