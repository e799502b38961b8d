"""
ONNX Runtime for a sentence-transformers model: export once, cache, check, run.

sentence-transformers' own ``backend="onnx"`` covers text models only (through
Optimum's feature-extraction export), not CLIP's image tower. So each tower
(the model's forward pass for one modality, from preprocessed tensors to the
sentence embedding) is exported here with ``torch.onnx.export`` (the dynamo
exporter, dynamic batch and sequence axes) and, for int8, quantized with
``onnxruntime.quantization.quantize_dynamic`` (weights of the matrix products,
as torch's dynamic int8 does; 7-bit weights on x86 CPUs without VNNI, where
full-range ones saturate). Preprocessing (tokenizer, image processor)
stays the model's own.

Graphs are cached as ``shop_search-<modality>-<precision>.onnx``: for a model
in a writable local folder, in its ``onnx/`` subfolder; otherwise under the
Hugging Face home (``HF_HOME``, ``~/.cache/huggingface``), in
``shop_search/onnx/<model>-<hash of its folder>/``, so that copying that
cache to a server carries them along. Loading a cached graph needs only
onnxruntime; exporting one also needs ``onnx`` and ``onnxscript``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import runtime

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "OnnxTower",
    "OnnxUnavailable",
    "cache_folder",
    "load_tower",
    "needs_reduced_range",
]

logger = logging.getLogger(__name__)

#: ONNX opset of exported graphs (17 is the oldest with LayerNormalization).
OPSET = 18
OUTPUT = "shop_search_vector"


class OnnxUnavailable(Exception):
    """This tower cannot run on ONNX Runtime here; the message says why."""


class OnnxTower:
    """
    One exported tower in an ONNX Runtime session: takes the model's
    preprocessed features, returns L2-normalized float32 vectors. Sessions
    are safe to call from several threads.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle worker threads otherwise spin between requests, taking CPU
        # from the web server and the database on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [spec.name for spec in self.session.get_inputs()]
        #: torch fp32's vectors for the probe, once :func:`load_tower` checked it.
        self.reference: np.ndarray | None = None

    def run(self, features: dict[str, Any]) -> np.ndarray:
        import numpy as np

        feed = {name: _array(features[name]) for name in self.inputs}
        (vectors,) = self.session.run([OUTPUT], feed)
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _array(value: Any) -> np.ndarray:
    """A feature as ONNX Runtime takes it: NumPy as is, a torch tensor converted."""
    return value if not hasattr(value, "cpu") else value.cpu().numpy()


def load_tower(
    model: Any,
    folder: Path,
    modality: str,
    precision: str,
    reference: Callable[[Sequence[Any]], np.ndarray],
    preprocess: Callable[[Sequence[Any]], dict[str, Any]],
    threads: int,
) -> OnnxTower:
    """
    The ``modality`` tower of ``model`` at ``precision`` ("fp32" or "int8"),
    exported on first use and cached in ``folder`` (see :func:`cache_folder`).
    Its vectors for the probe must be within ``runtime.BACKEND_TOLERANCE`` of
    ``reference`` (torch fp32); a cached graph that is not (the model changed
    in place) is exported again, once. Raises :class:`OnnxUnavailable` when it
    cannot be had.
    """
    probe = runtime.probe_inputs(modality)
    features = preprocess(probe)
    expected = reference(probe)
    path = folder / f"shop_search-{modality}-{precision}.onnx"
    # A cached graph that fails (the model changed in place) is built afresh.
    for fresh in (False, True):
        if fresh or not path.exists():
            try:
                _build(model, modality, precision, features, path, fresh)
            except OnnxUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure falls back
                raise OnnxUnavailable(
                    f"building {path.name} failed: {type(exc).__name__}: {exc}"
                ) from exc
        try:
            tower = OnnxTower(path, threads)
            cosine = runtime.min_cosine(expected, tower.run(features))
        except Exception as exc:  # noqa: BLE001 - a broken file is built again
            if fresh:
                raise OnnxUnavailable(
                    f"ONNX Runtime cannot run {path}: {type(exc).__name__}: {exc}"
                ) from exc
            logger.warning("Exporting %s again: %s", path, exc)
            continue
        if cosine >= runtime.BACKEND_TOLERANCE:
            tower.reference = expected
            logger.info(
                "%s tower on ONNX Runtime %s from %s (probe cosine %.5f vs torch)",
                modality,
                precision,
                path,
                cosine,
            )
            return tower
        if fresh:
            raise OnnxUnavailable(
                f"its {modality} vectors drift from torch fp32 (probe cosine "
                f"{cosine:.5f} < {runtime.BACKEND_TOLERANCE})"
            )
        logger.warning(
            "Exporting %s again: probe cosine %.5f vs torch fp32", path, cosine
        )
    raise AssertionError("unreachable")  # pragma: no cover


def cache_folder(model_name: str, source: Path | None) -> Path:
    """
    Where the ONNX graphs of ``model_name`` are kept (created if missing);
    ``source`` is the folder its files were loaded from, if known (a hub
    snapshot's path holds its revision: a new revision is exported anew).
    """
    local = Path(model_name).expanduser()
    if local.is_dir():
        folder = local / "onnx"
        with contextlib.suppress(OSError):
            folder.mkdir(exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
    if source is None and local.is_dir():
        source = local
    origin = str(source.resolve()) if source else model_name
    from huggingface_hub import constants

    digest = hashlib.sha256(origin.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name.strip("/"))[-60:]
    folder = Path(constants.HF_HOME) / "shop_search" / "onnx" / f"{slug}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _build(
    model: Any,
    modality: str,
    precision: str,
    features: dict[str, Any],
    path: Path,
    fresh: bool,
) -> None:
    """
    Export (fp32) or quantize (int8, from the fp32 graph, exported first
    unless cached and not ``fresh``) into ``path``.
    """
    fp32 = path.with_name(f"shop_search-{modality}-fp32.onnx")
    if precision == "fp32" or fresh or not fp32.exists():
        logger.info("Exporting the %s tower to %s (once)", modality, fp32)
        with _replacing(fp32) as target:
            _export(model, modality, features, target)
    if precision == "int8":
        logger.info("Quantizing %s to int8: %s", fp32.name, path)
        with _replacing(path) as target:
            _quantize(fp32, target)


def _export(model: Any, modality: str, features: dict[str, Any], target: Path) -> None:
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
        import torch
    except ImportError as exc:
        raise OnnxUnavailable(
            f"exporting needs onnx and onnxscript ({exc}); "
            "pip install 'shop-search[onnx]'"
        ) from exc

    tensors = {k: v for k, v in features.items() if torch.is_tensor(v)}
    constants = {k: v for k, v in features.items() if not torch.is_tensor(v)}
    axis = torch.export.Dim.DYNAMIC
    dynamic = {
        name: {0: axis, 1: axis} if modality != "image" and t.dim() > 1 else {0: axis}
        for name, t in tensors.items()
    }

    class Tower(torch.nn.Module):
        """The model's forward pass for one modality, from tensors to vectors."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, features: dict[str, Any]) -> Any:
            return self.model({**features, **constants})["sentence_embedding"]

    tower = Tower().eval()
    with _quiet_exporter():
        try:
            torch.onnx.export(
                tower,
                (),
                kwargs={"features": tensors},
                f=str(target),
                input_names=list(tensors),
                output_names=[OUTPUT],
                dynamic_shapes={"features": dynamic},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - any export failure falls back
            raise OnnxUnavailable(
                f"torch.onnx.export failed: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            ) from exc


def _quantize(source: Path, target: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxUnavailable(
            f"int8 needs onnxruntime.quantization and onnx ({exc}); "
            "pip install 'shop-search[onnx]'"
        ) from exc
    # It reports each tensor it leaves alone through the root logger.
    root = logging.getLogger()
    flags = runtime.cpu_flags()
    notes = _BelowWarning()
    root.addFilter(notes)
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            reduce_range=needs_reduced_range(flags),
        )
    finally:
        root.removeFilter(notes)


def needs_reduced_range(flags: frozenset[str]) -> bool:
    """
    Whether int8 weights must keep to 7 bits on a CPU with these
    ``/proc/cpuinfo`` flags: an x86 CPU without VNNI multiplies uint8 by int8
    with ``vpmaddubsw``, whose 16-bit sums saturate with full-range weights.
    On the AVX2-only EPYC the text tower's probe drifted to cosine 0.979 of
    torch fp32 (and fell back to torch), 0.9992 with 7-bit weights.
    """
    vnni = {"avx512_vnni", "avx_vnni", "amx_int8"}
    return "sse4_1" in flags and not flags & vnni


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "pre-processing" not in (
            record.getMessage()
        )


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it atomically when done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{path.stem}-", suffix=".onnx", dir=path.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        # mkstemp makes it private; the web server may run as another user.
        os.chmod(temporary, 0o644)
        # Several processes may export at once: the last complete file wins.
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """
    The exporter narrates each pass (onnxscript, onnx_ir) and notes
    deprecations and optional torchvision ops: noise in a shop's log.
    """
    chatty = [
        logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")
    ]
    levels = [logger.level for logger in chatty]
    for logger in chatty:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(chatty, levels, strict=True):
            logger.setLevel(level)
