"""
Cached ONNX towers, run without importing torch, transformers or
sentence-transformers.

Importing those costs seconds at every process start (sentence-transformers
alone took 6.5 s on the 2-core benchmark machine), more than encoding the
demo catalog. Once :func:`~shop_search.encoders.onnx_backend.load_tower` has
exported a tower and checked it against torch, :func:`write_record` keeps
beside the graph what running it needs without them
(``shop_search-<modality>.json``): torch fp32's vectors for the probe, the
image square and normalisation or the tokenizer's truncation and padding, and
a fingerprint of the model's files.

A later process (:func:`open_cached`) then loads the graph with onnxruntime
alone, preprocesses with :class:`~shop_search.encoders.pixels.SquareInput` or
the ``tokenizers`` library, and checks the probe against the recorded vectors
at ``runtime.BACKEND_TOLERANCE``: the same parity check, without torch.
A record that is missing, stale (the model's files changed) or fails the
check gives None, and the encoder loads the full model as before.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import runtime
from .model_files import local_folder, modules
from .onnx_backend import OnnxTower, cache_folder
from .pixels import SquareInput

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CachedTowers", "fingerprint", "open_cached", "write_record"]

logger = logging.getLogger(__name__)

# Devices on which sentence-transformers would put the model by itself
# (DEVICE None): CUDA, ROCm, WSL's GPU, Ascend, Gaudi, accelerators.
_ACCELERATORS = (
    "/dev/nvidia[0-9]*",
    "/dev/kfd",
    "/dev/dxg",
    "/dev/davinci[0-9]*",
    "/dev/hl[0-9]*",
    "/dev/accel/*",
)

# Longer than any model's input: tokenizing it shows where the model truncates.
_LONG_TEXT = " ".join(["word"] * 4096)


def record_path(folder: Path, modality: str) -> Path:
    return folder / f"shop_search-{modality}.json"


def fingerprint(source: Path) -> str:
    """Names, sizes and modification times of the model's files (not onnx/)."""
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] == "onnx" or not path.is_file():
            continue
        stat = path.stat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def write_record(
    folder: Path,
    source: Path | None,
    modality: str,
    model: Any,
    reference: np.ndarray,
    square: SquareInput | None,
) -> None:
    """
    Keep what :func:`open_cached` needs to run the ``modality`` tower of
    ``model`` (a loaded SentenceTransformer from the folder ``source``)
    without torch: ``reference`` is torch fp32's vectors for the probe.
    Nothing is written where the model has no local folder, or preprocessing
    this module cannot repeat.
    """
    if source is None:
        return
    record: dict[str, Any] = {
        "fingerprint": fingerprint(source),
        "dimensions": int(reference.shape[1]),
        "reference": reference.astype(float).round(7).tolist(),
    }
    if modality == "image":
        if square is None:
            return
        record["square"] = {"size": square.size, "mean": square.mean, "std": square.std}
    else:
        tokenizer = getattr(model, "tokenizer", None)
        folders = [source / module["path"] for module in modules(source)[:1]]
        files = [
            f / "tokenizer.json" for f in folders if (f / "tokenizer.json").exists()
        ]
        if tokenizer is None or not files or tokenizer.pad_token_id is None:
            return
        from .torch_backend import prepare

        truncated = prepare(model, [_LONG_TEXT])["input_ids"].shape[1]
        whole = len(tokenizer(_LONG_TEXT, truncation=False)["input_ids"])
        record["text"] = {
            "tokenizer": str(files[0].relative_to(source)),
            "max_length": int(truncated) if truncated < whole else None,
            "pad_id": int(tokenizer.pad_token_id),
            "lower_case": bool(getattr(model[0], "do_lower_case", False)),
            "padding_side": str(getattr(tokenizer, "padding_side", "right")),
        }
    path = record_path(folder, modality)
    try:
        if path.exists() and json.loads(path.read_text()) == record:
            return
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)
    except (OSError, ValueError) as exc:
        logger.warning("Could not write %s: %s", path, exc)


@dataclass
class CachedTowers:
    """
    The verified towers of one model at one precision, opened on first use
    of each modality. ``runtime`` says what runs them.
    """

    folder: Path
    source: Path
    precision: str
    runtime: runtime.Runtime
    records: dict[str, dict[str, Any]]
    _towers: dict[str, OnnxTower | None] = field(default_factory=dict)
    _tokenizer: Any = None

    @property
    def dimensions(self) -> int:
        return int(next(iter(self.records.values()))["dimensions"])

    @property
    def square(self) -> SquareInput | None:
        spec = self.records.get("image", {}).get("square")
        if not spec:
            return None
        return SquareInput(spec["size"], tuple(spec["mean"]), tuple(spec["std"]))

    def tower(self, modality: str) -> OnnxTower | None:
        """The ``modality`` tower if it passes the probe here, else None."""
        if modality not in self._towers:
            self._towers[modality] = self._open(modality)
        return self._towers[modality]

    def preprocess(self, inputs: Sequence[Any], modality: str) -> dict[str, Any]:
        """The features the tower takes, as the model's own preprocessing."""
        if modality == "image":
            square = self.square
            assert square is not None
            return {"pixel_values": square.pixel_values(inputs), "modality": "image"}
        return self._tokenize(list(inputs))

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text becomes (truncated as the tower takes it)."""
        encodings = self._tokenizer_for(list(texts))
        return [sum(encoding.attention_mask) for encoding in encodings]

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        import numpy as np

        encodings = self._tokenizer_for(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array(
                [e.attention_mask for e in encodings], dtype=np.int64
            ),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            "modality": "text",
        }

    def _tokenizer_for(self, texts: list[str]) -> list[Any]:
        """``texts`` through the model's tokenizer, padded to the longest."""
        spec = self.records["text"]["text"]
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.source / spec["tokenizer"]))
            tokenizer.no_truncation()
            if spec["max_length"]:
                tokenizer.enable_truncation(spec["max_length"])
            tokenizer.enable_padding(
                pad_id=spec["pad_id"], direction=spec.get("padding_side", "right")
            )
            self._tokenizer = tokenizer
        if spec["lower_case"]:
            texts = [text.lower() for text in texts]
        return self._tokenizer.encode_batch(texts)

    def _open(self, modality: str) -> OnnxTower | None:
        import numpy as np

        record = self.records.get(modality)
        path = self.folder / f"shop_search-{modality}-{self.precision}.onnx"
        if record is None or not path.exists():
            return None
        try:
            tower = OnnxTower(path, threads=0)
            probe = runtime.probe_inputs(modality)
            vectors = tower.run(self.preprocess(probe, modality))
            expected = np.asarray(record["reference"], dtype=np.float32)
            cosine = runtime.min_cosine(expected, vectors)
        except Exception as exc:  # noqa: BLE001 - the full model is the fallback
            logger.info("Cached %s graph %s not usable: %s", modality, path, exc)
            return None
        if cosine < runtime.BACKEND_TOLERANCE:
            logger.info(
                "Cached %s graph %s drifts from the recorded torch vectors "
                "(cosine %.5f); loading the full model",
                modality,
                path,
                cosine,
            )
            return None
        logger.info(
            "%s tower on ONNX Runtime %s from %s, without torch (probe cosine "
            "%.5f vs torch fp32 as recorded)",
            modality,
            self.precision,
            path,
            cosine,
        )
        return tower


def open_cached(
    model_name: str, *, precision: str, backend: str, device: str | None
) -> CachedTowers | None:
    """
    The cached towers of ``model_name`` when the settings resolve to ONNX
    Runtime on this CPU and a current record exists for at least one tower;
    else None (load the full model). Reads a few small files; opens no graph.
    """
    if backend == "torch" or precision not in ("auto", "fp32", "int8"):
        return None
    if device not in (None, "cpu") or (device is None and _accelerator_present()):
        return None
    version = runtime.onnxruntime_version()
    if version is None:
        return None
    chosen = runtime.choose_runtime(
        precision,
        backend,
        device_type="cpu",
        flags=runtime.cpu_flags(),
        onnx_version=version,
    )
    if chosen.backend != "onnx" or chosen.fallback:
        return None
    source = local_folder(model_name)
    if source is None:
        return None
    folder = cache_folder(model_name, source)
    current = fingerprint(source)
    records = {}
    for modality in ("image", "text"):
        try:
            record = json.loads(record_path(folder, modality).read_text())
        except (OSError, ValueError):
            continue
        if record.get("fingerprint") == current:
            records[modality] = record
    if not records:
        return None
    from dataclasses import replace

    chosen = replace(chosen, reason=f"{chosen.reason}; cached graphs, without torch")
    return CachedTowers(folder, source, chosen.precision, chosen, records)


def _accelerator_present() -> bool:
    """Whether sentence-transformers might put the model on an accelerator."""
    if not sys.platform.startswith("linux"):
        return True  # macOS (MPS), Windows (CUDA): let torch decide
    return any(glob.glob(pattern) for pattern in _ACCELERATORS)
