"""
Which runtime an encoder uses: the backend (torch or ONNX Runtime) and the
precision, chosen from ``SHOP_SEARCH['BACKEND']`` and ``['PRECISION']``, the
device and the CPU's instructions; and the probe that checks a choice.

The choice never changes the vectors' model (``model_id``): every runtime
gives vectors within cosine ``PRECISION_TOLERANCE`` of torch fp32, which the
probe checks at load.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BACKENDS",
    "BACKEND_TOLERANCE",
    "PRECISIONS",
    "PRECISION_TOLERANCE",
    "Runtime",
    "check_settings",
    "choose_runtime",
    "cpu_flags",
    "min_cosine",
    "onnxruntime_version",
    "probe_inputs",
]

PRECISIONS = ("fp32", "bf16", "int8", "fp16")
BACKENDS = ("torch", "onnx")

#: A reduced precision must keep the probe's vectors this close to fp32.
PRECISION_TOLERANCE = 0.995
#: An ONNX graph must keep the probe's vectors this close to torch fp32.
BACKEND_TOLERANCE = 0.999

#: The ``/proc/cpuinfo`` flag of the bfloat16 matrix units (AMX) that make
#: torch bf16 faster than int8. AVX-512 BF16 alone does not: on an AMD EPYC
#: with it, torch int8 measured 1.3-1.6x bf16's images/s and half its query
#: time (BENCHMARKS.md).
BF16_FLAG = "amx_bf16"


@dataclass(frozen=True)
class Runtime:
    """
    What runs an encoder's model: ``backend`` ("torch" or "onnx") and
    ``precision`` ("fp32", "bf16", "int8" or "fp16"). ``automatic`` is true
    when the precision was chosen by "auto" (then the probe may veto it);
    ``reason`` says why, for the log; ``fallback`` is true when the settings
    asked for something that cannot run here (logged as a warning).
    """

    backend: str
    precision: str
    reason: str
    automatic: bool = False
    fallback: bool = False

    def __str__(self) -> str:
        name = "ONNX Runtime" if self.backend == "onnx" else "torch"
        return f"{name} {self.precision} ({self.reason})"


def check_settings(precision: str, backend: str) -> None:
    """Raise :class:`ModelLoadError` naming the fix for an unknown value."""
    if precision != "auto" and precision not in PRECISIONS:
        raise ModelLoadError(
            f"SHOP_SEARCH['PRECISION'] is {precision!r}; use 'auto' (the "
            "default), 'fp32', 'bf16', 'int8' or 'fp16' (GPU)."
        )
    if backend != "auto" and backend not in BACKENDS:
        raise ModelLoadError(
            f"SHOP_SEARCH['BACKEND'] is {backend!r}; use 'auto' (the default), "
            "'torch' or 'onnx'."
        )


def choose_runtime(
    precision: str,
    backend: str,
    *,
    device_type: str,
    flags: Collection[str],
    onnx_version: str | None,
) -> Runtime:
    """
    The runtime for the settings on this machine (a pure function of its
    arguments). ``device_type`` is the torch device the model loaded on,
    ``flags`` the CPU's ``/proc/cpuinfo`` flags, ``onnx_version`` the
    installed onnxruntime's version or ``None``.

    The rule, from the measurements in BENCHMARKS.md: ONNX Runtime is faster
    than torch on a CPU at fp32 and at int8, and its int8 is the fastest
    runtime measured on every CPU tried (Xeon with AMX, EPYC with and
    without AVX-512), with vectors within cosine 0.9998 of fp32; it has no
    bf16 or fp16 kernels worth using on a CPU. Without it, torch bf16 is
    fastest on CPUs with AMX (``BF16_FLAG``), torch int8 on others (bf16 is
    many times slower without bf16 instructions, and slower than int8 with
    AVX-512 BF16 alone). On a CUDA GPU, torch fp16.
    """
    check_settings(precision, backend)
    on_cpu = device_type == "cpu"
    fallback = ""
    if backend == "onnx" and precision in ("bf16", "fp16"):
        raise ModelLoadError(
            f"SHOP_SEARCH['BACKEND'] 'onnx' runs 'fp32' or 'int8', not "
            f"{precision!r}. Set PRECISION to 'auto', 'int8' or 'fp32', or "
            "BACKEND to 'torch' or 'auto'."
        )
    if backend == "onnx" and onnx_version is None:
        fallback = (
            "BACKEND 'onnx' but onnxruntime is not installed; "
            "pip install 'shop-search[onnx]'"
        )
    elif backend == "onnx" and not on_cpu:
        fallback = (
            f"BACKEND 'onnx' runs on the CPU only and the model is on "
            f"{device_type!r}; set DEVICE 'cpu' or BACKEND 'auto'"
        )
    use_onnx = (backend == "onnx" and not fallback) or (
        backend == "auto"
        and onnx_version is not None
        and on_cpu
        and precision in ("auto", "fp32", "int8")
    )
    chosen = "onnx" if use_onnx else "torch"
    if precision != "auto":
        if precision == "fp16" and device_type != "cuda":
            raise ModelLoadError(
                f"PRECISION 'fp16' runs on a CUDA GPU only; the model is on "
                f"{device_type!r}. Use 'auto', 'bf16' or 'int8' on a CPU."
            )
        why = fallback or (
            f"BACKEND {backend!r}"
            + (f", onnxruntime {onnx_version}" if use_onnx else "")
        )
        return Runtime(chosen, precision, why, fallback=bool(fallback))
    if device_type == "cuda":
        picked, why = "fp16", "auto: CUDA GPU"
    elif not on_cpu:
        picked, why = "fp32", f"auto: {device_type} device"
    elif use_onnx:
        picked, why = "int8", f"auto: CPU, onnxruntime {onnx_version}"
    else:
        if BF16_FLAG in flags:
            picked, why = "bf16", "auto: CPU with AMX"
        else:
            picked, why = "int8", "auto: CPU without AMX"
        if backend == "auto":
            why += ", onnxruntime not installed"
    if fallback:
        why = f"{fallback}; {why}"
    return Runtime(chosen, picked, why, automatic=True, fallback=bool(fallback))


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, or ``None`` when it cannot be imported."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def probe_inputs(modality: str) -> Sequence[Any]:
    """
    Fixed inputs that parity checks encode with two runtimes: two 224 px
    pictures with edges and colours (a flat image would leave most of a
    vision model idle), or short queries in four scripts. At least two of
    each, so that an exported graph keeps a dynamic batch axis.
    """
    if modality != "image":
        return ["a red summer dress", "rotes Kleid mit Blumen", "红色连衣裙", "стул"]
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, 224, dtype=np.float32)
    gradient = np.stack(
        [
            np.tile(ramp, (224, 1)),
            np.tile(ramp[:, None], (1, 224)),
            np.full((224, 224), 96.0, dtype=np.float32),
        ],
        axis=-1,
    )
    grid = np.indices((224, 224)).sum(axis=0) // 28 % 2
    checks = np.stack([grid * 200, (1 - grid) * 150, grid * 60 + 40], axis=-1)
    return [
        Image.fromarray(gradient.astype(np.uint8)),
        Image.fromarray(checks.astype(np.uint8)),
    ]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine between matching rows of two sets of vectors."""
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())
