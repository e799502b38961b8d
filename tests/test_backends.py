"""
The runtime an encoder picks (backend, precision) and the ONNX Runtime
backend: real exports of the tiny models, real onnxruntime sessions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shop_search.encoders import (
    SentenceTransformerEncoder,
    cached_onnx,
    get_image_encoder,
    onnx_backend,
    runtime,
)
from shop_search.encoders.runtime import choose_runtime
from shop_search.exceptions import ModelLoadError

from .conftest import QUERIES

IMAGES = [
    Image.new("RGB", (64, 64), "red"),
    Image.new("RGB", (80, 40), "navy"),
    Image.new("RGB", (40, 90), "olive"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Copies of the tiny models, whose onnx/ caches these tests control."""
    from django.conf import settings

    folder = tmp_path_factory.mktemp("models")
    ignore = shutil.ignore_patterns("onnx")
    for key, name in (("IMAGE_MODEL", "clip"), ("TEXT_MODEL", "text")):
        shutil.copytree(settings.SHOP_SEARCH[key], folder / name, ignore=ignore)
    return {"image": str(folder / "clip"), "text": str(folder / "text")}


@pytest.fixture(scope="module")
def torch_fp32(models):
    """Reference vectors: torch at fp32."""
    image = SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="torch"
    )
    text = SentenceTransformerEncoder(models["text"], precision="fp32", backend="torch")
    return {
        "image": image.encode_images(IMAGES),
        "text": text.encode_texts(QUERIES),
        "clip text": image.encode_texts(QUERIES),
    }


def cosines(a, b):
    return (a * b).sum(axis=1)


def pair(chosen):
    return (chosen.backend, chosen.precision)


# --- The choice -----------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16"),
        # AVX-512 BF16 without AMX (AMD EPYC): int8 measured faster than bf16.
        ({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}, "int8"),
        ({"avx2", "avx512f", "avx512_vnni"}, "int8"),
        ({"avx2"}, "int8"),
        (set(), "int8"),
    ],
)
def test_auto_precision_on_torch_follows_the_cpu_flags(flags, expected):
    chosen = choose_runtime(
        "auto", "torch", device_type="cpu", flags=flags, onnx_version=None
    )
    assert pair(chosen) == ("torch", expected)
    assert chosen.automatic and not chosen.fallback


def test_auto_picks_onnx_int8_on_any_cpu_when_onnxruntime_is_installed():
    for flags in ({"amx_bf16"}, {"avx512_bf16"}, {"avx2"}):
        chosen = choose_runtime(
            "auto", "auto", device_type="cpu", flags=flags, onnx_version="1.20.0"
        )
        assert pair(chosen) == ("onnx", "int8")
    without = choose_runtime(
        "auto", "auto", device_type="cpu", flags={"avx2"}, onnx_version=None
    )
    assert pair(without) == ("torch", "int8")
    assert "onnxruntime not installed" in without.reason


def test_auto_on_a_gpu_is_torch_half_precision():
    chosen = choose_runtime(
        "auto", "auto", device_type="cuda", flags=set(), onnx_version="1.20.0"
    )
    assert pair(chosen) == ("torch", "fp16")


def test_explicit_values_are_kept_and_combinations_that_cannot_run_say_why():
    kwargs = {"device_type": "cpu", "flags": {"avx2"}, "onnx_version": "1.20.0"}
    assert pair(choose_runtime("bf16", "auto", **kwargs)) == ("torch", "bf16")
    assert pair(choose_runtime("fp32", "auto", **kwargs)) == ("onnx", "fp32")
    assert pair(choose_runtime("int8", "torch", **kwargs)) == ("torch", "int8")
    with pytest.raises(ModelLoadError, match="'onnx' runs 'fp32' or 'int8'"):
        choose_runtime("bf16", "onnx", **kwargs)
    with pytest.raises(ModelLoadError, match="CUDA GPU only"):
        choose_runtime("fp16", "torch", **kwargs)
    missing = choose_runtime(
        "fp32", "onnx", device_type="cpu", flags=set(), onnx_version=None
    )
    assert pair(missing) == ("torch", "fp32") and missing.fallback
    assert "pip install" in missing.reason


def test_an_unknown_backend_is_a_clear_error(settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "BACKEND": "tensorrt"}
    with pytest.raises(ModelLoadError, match="BACKEND"):
        get_image_encoder()


def test_the_choice_is_logged_at_load_and_leaves_model_id_alone(
    settings, models, caplog
):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "IMAGE_MODEL": models["image"],
        "PRECISION": "auto",
        "BACKEND": "torch",
    }
    encoder = get_image_encoder()
    with caplog.at_level(logging.INFO, logger="shop_search"):
        chosen = encoder.runtime
    expected = "bf16" if "amx_bf16" in runtime.cpu_flags() else "int8"
    assert pair(chosen) == ("torch", expected)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("shop_search")]
    assert f"{models['image']} runs on torch {expected} (auto: CPU" in "\n".join(lines)
    assert encoder.model_id == models["image"]


def test_an_automatic_precision_that_drifts_is_vetoed_to_fp32(
    models, torch_fp32, monkeypatch, caplog
):
    monkeypatch.setattr(runtime, "PRECISION_TOLERANCE", 1.01)
    encoder = SentenceTransformerEncoder(
        models["image"], precision="auto", backend="torch"
    )
    with caplog.at_level(logging.WARNING, logger="shop_search"):
        assert encoder.runtime.precision == "fp32"
    assert "drifts from fp32 on the probe" in caplog.text
    vectors = encoder.encode_images(IMAGES)
    assert cosines(vectors, torch_fp32["image"]).min() > 0.99999


@pytest.mark.parametrize(
    "spec", ["torch:bf16", "torch:int8", "onnx:fp32", "onnx:int8", "auto:auto"]
)
def test_every_runtime_stays_within_the_tolerance_of_torch_fp32(
    spec, models, torch_fp32
):
    backend, precision = spec.split(":")
    image = SentenceTransformerEncoder(
        models["image"], precision=precision, backend=backend
    )
    text = SentenceTransformerEncoder(
        models["text"], precision=precision, backend=backend
    )
    assert not image.runtime.fallback and not text.runtime.fallback
    tolerance = runtime.PRECISION_TOLERANCE
    assert cosines(image.encode_images(IMAGES), torch_fp32["image"]).min() >= tolerance
    assert cosines(text.encode_texts(QUERIES), torch_fp32["text"]).min() >= tolerance


# --- ONNX Runtime ---------------------------------------------------------


def test_onnx_towers_are_exported_once_and_reused_from_the_cache(
    models, torch_fp32, monkeypatch
):
    first = SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="onnx"
    )
    vectors = first.encode_images(IMAGES)
    graph = Path(models["image"]) / "onnx" / "shop_search-image-fp32.onnx"
    assert graph.is_file()
    assert graph.stat().st_mode & 0o044 == 0o044  # readable by the web server
    assert first.runtime.backend == "onnx"
    assert vectors.dtype == np.float32 and vectors.shape == (3, 512)
    assert cosines(vectors, torch_fp32["image"]).min() >= 0.999

    exports = []
    monkeypatch.setattr(onnx_backend, "_export", lambda *a: exports.append(a))
    second = SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="onnx"
    )
    np.testing.assert_allclose(second.encode_images(IMAGES), vectors, atol=1e-6)
    assert exports == []
    assert second.model_id == first.model_id == models["image"]


def test_onnx_vectors_stay_within_tolerance_of_torch_for_both_towers(
    models, torch_fp32
):
    for precision, bound in (("fp32", 0.999), ("int8", runtime.PRECISION_TOLERANCE)):
        image = SentenceTransformerEncoder(
            models["image"], precision=precision, backend="onnx"
        )
        text = SentenceTransformerEncoder(
            models["text"], precision=precision, backend="onnx"
        )
        image_vectors = image.encode_images(IMAGES)
        text_vectors = text.encode_texts(QUERIES)
        assert (image.runtime.backend, text.runtime.backend) == ("onnx", "onnx")
        assert text_vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1, rtol=1e-5)
        assert cosines(image_vectors, torch_fp32["image"]).min() >= bound
        assert cosines(text_vectors, torch_fp32["text"]).min() >= bound
    assert (Path(models["text"]) / "onnx" / "shop_search-text-int8.onnx").is_file()


def test_clip_text_tower_runs_on_onnx_too_with_batches_in_input_order(
    models, torch_fp32
):
    encoder = SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="onnx", batch_size=4
    )
    vectors = encoder.encode_texts(QUERIES)  # 6 texts of mixed lengths, 2 batches
    assert cosines(vectors, torch_fp32["clip text"]).min() >= 0.999
    assert encoder.encode_texts([]).shape == (0, 512)


def test_a_broken_cached_graph_is_exported_again(models, torch_fp32, caplog):
    SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="onnx"
    ).encode_images(IMAGES[:1])
    graph = Path(models["image"]) / "onnx" / "shop_search-image-fp32.onnx"
    graph.write_bytes(b"not a graph")
    encoder = SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="onnx"
    )
    with caplog.at_level(logging.WARNING, logger="shop_search"):
        vectors = encoder.encode_images(IMAGES)
    assert "Exporting" in caplog.text and "again" in caplog.text
    assert encoder.runtime.backend == "onnx"
    assert cosines(vectors, torch_fp32["image"]).min() >= 0.999


def test_onnx_falls_back_to_torch_with_a_warning_when_parity_fails(
    models, torch_fp32, monkeypatch, caplog
):
    monkeypatch.setattr(runtime, "BACKEND_TOLERANCE", 1.01)
    encoder = SentenceTransformerEncoder(
        models["text"], precision="int8", backend="onnx"
    )
    with caplog.at_level(logging.WARNING, logger="shop_search"):
        vectors = encoder.encode_texts(QUERIES)
    assert pair(encoder.runtime) == ("torch", "int8")
    assert encoder.runtime.fallback
    assert "vectors drift from torch fp32" in caplog.text
    assert cosines(vectors, torch_fp32["text"]).min() > runtime.PRECISION_TOLERANCE


def test_without_onnxruntime_the_encoder_runs_on_torch(
    models, torch_fp32, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    auto = SentenceTransformerEncoder(models["image"], precision="fp32")
    with caplog.at_level(logging.INFO, logger="shop_search"):
        assert auto.runtime.backend == "torch" and not auto.runtime.fallback
    asked = SentenceTransformerEncoder(
        models["image"], precision="fp32", backend="onnx"
    )
    with caplog.at_level(logging.WARNING, logger="shop_search"):
        vectors = asked.encode_images(IMAGES)
    assert asked.runtime.backend == "torch" and asked.runtime.fallback
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pip install" in r.getMessage() for r in warnings)
    assert cosines(vectors, torch_fp32["image"]).min() > 0.99999


def test_a_model_folder_that_cannot_be_written_caches_under_hf_home(
    models, monkeypatch, tmp_path
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    assert onnx_backend.cache_folder(models["image"], None) == (
        Path(models["image"]) / "onnx"
    )
    monkeypatch.setattr(onnx_backend.os, "access", lambda *a: False)
    local = onnx_backend.cache_folder(models["image"], None)
    hub = onnx_backend.cache_folder("sentence-transformers/clip-ViT-B-32", None)
    for folder in (local, hub):
        assert folder.is_dir() and folder.parent == tmp_path / "hf/shop_search/onnx"
    assert hub.name.startswith("sentence-transformers-clip-ViT-B-32-")
    assert local != hub


# --- Cached towers without torch --------------------------------------------

_NEW_PROCESS = """
import json, sys
from PIL import Image
from shop_search.encoders import SentenceTransformerEncoder
image = SentenceTransformerEncoder(sys.argv[1])
text = SentenceTransformerEncoder(sys.argv[2])
images = [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (80, 40), "navy")]
print(json.dumps({
    "image": image.encode_images(images).tolist(),
    "text": text.encode_texts(json.loads(sys.argv[3])).tolist(),
    "runtime": str(text.runtime),
    "imported": sorted(
        m for m in ("torch", "transformers", "sentence_transformers")
        if m in sys.modules
    ),
}))
"""


def test_a_new_process_runs_the_cached_towers_without_importing_torch(models):
    image = SentenceTransformerEncoder(models["image"])
    text = SentenceTransformerEncoder(models["text"])
    expected = {
        "image": image.encode_images(IMAGES[:2]),  # exports, checks, records
        "text": text.encode_texts(QUERIES),
    }
    result = subprocess.run(
        [sys.executable, "-c", _NEW_PROCESS, models["image"], models["text"]]
        + [json.dumps(QUERIES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["imported"] == []
    assert "cached graphs, without torch" in found["runtime"]
    for key in ("image", "text"):
        assert cosines(np.array(found[key]), expected[key]).min() >= 0.9999


def test_cached_towers_are_not_used_once_the_model_files_change(models, torch_fp32):
    def cached():
        return cached_onnx.open_cached(
            models["text"], precision="auto", backend="auto", device=None
        )

    SentenceTransformerEncoder(models["text"]).encode_texts(QUERIES[:1])
    assert cached() is not None
    config = Path(models["text"]) / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cached() is None  # the full model is loaded and checked again
    encoder = SentenceTransformerEncoder(models["text"], precision="int8")
    vectors = encoder.encode_texts(QUERIES)
    assert "without torch" not in encoder.runtime.reason
    assert cosines(vectors, torch_fp32["text"]).min() >= runtime.PRECISION_TOLERANCE
    assert cached() is not None  # recorded again for the next process
