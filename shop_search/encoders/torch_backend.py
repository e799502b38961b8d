"""
Running a sentence-transformers model on torch at a given precision: its own
preprocessing, the forward pass under autocast (bf16, fp16), and dynamic
int8 quantization of its linear layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["autocast", "forward", "modalities", "prepare", "quantize_int8"]


def prepare(model: Any, inputs: Sequence[Any]) -> dict[str, Any]:
    """The model's own preprocessing (tokenizer, image processor) of one batch."""
    # sentence-transformers 6 names it preprocess(), 5 tokenize().
    run = getattr(model, "preprocess", None) or model.tokenize
    return run(list(inputs))


def forward(model: Any, features: dict[str, Any], precision: str) -> np.ndarray:
    """The torch forward pass of one batch, as SentenceTransformer.encode runs it."""
    import numpy as np
    import torch

    batch = {
        key: value.to(model.device) if torch.is_tensor(value) else value
        for key, value in features.items()
    }
    for key, value in batch.items():
        if isinstance(value, np.ndarray):
            # Shares the array's memory: no copy on a CPU.
            batch[key] = torch.from_numpy(value).to(model.device)
    with torch.inference_mode(), autocast(model, precision):
        vectors = model(batch)["sentence_embedding"]
    vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return vectors.cpu().numpy()


def autocast(model: Any, precision: str) -> Any:
    """The autocast context of ``precision`` (none for fp32 and int8)."""
    import contextlib

    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(model.device.type, dtype=dtype)


def modalities(model: Any) -> list[str]:
    """What the model encodes (CLIP: texts and images), for the probe."""
    found = getattr(model, "modalities", None) or ["text"]
    return [m for m in ("text", "image") if m in found] or ["text"]


def quantize_int8(model: Any, model_name: str, *, inplace: bool) -> Any:
    """
    Dynamic int8 quantization of the model's linear layers (weights stored as
    int8, activations quantized per call): a quarter of the weight memory to
    read per query, which is what bounds a short text query on a CPU.
    ``inplace=False`` quantizes a copy and leaves ``model`` as it was.
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
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace)
