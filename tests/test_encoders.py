"""Model loading through the production path, on the tiny local models."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from shop_search.encoders import (
    SentenceTransformerEncoder,
    get_image_encoder,
    get_text_encoder,
)
from shop_search.exceptions import ModelLoadError

from .conftest import QUERIES


def test_image_vectors_are_normalized_float32():
    vectors = get_image_encoder().encode_images(
        [Image.new("RGB", (300, 200), "red"), Image.new("RGB", (40, 90), "blue")]
    )
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_text_queries_in_many_scripts_land_in_the_image_space():
    queries = QUERIES
    vectors = get_text_encoder().encode_texts(queries)
    assert vectors.shape == (len(queries), get_image_encoder().dimensions)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert len({v.tobytes() for v in vectors}) == len(queries)


def test_encoders_are_loaded_once_per_process():
    assert get_image_encoder() is get_image_encoder()
    assert get_image_encoder().model is get_image_encoder().model


def test_concurrent_encoding_from_threads_matches_serial_results():
    encoder = get_text_encoder()
    texts = [f"blue shoe {i}" for i in range(8)]
    expected = encoder.encode_texts(texts)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = encoder.encode_texts([texts[i]])[0]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(8):
        np.testing.assert_allclose(results[i], expected[i], atol=1e-5)


def test_a_missing_model_names_the_model_the_cause_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = SentenceTransformerEncoder("/srv/models/no-such-clip")
    with pytest.raises(ModelLoadError) as info:
        encoder.encode_texts(["x"])
    message = str(info.value)
    assert "/srv/models/no-such-clip" in message
    assert "HF_HUB_OFFLINE" in message
    assert "local folder" in message
    assert info.value.code == "model_unavailable"


def test_dimensions_are_read_from_config_files_without_loading(settings):
    image = settings.SHOP_SEARCH["IMAGE_MODEL"]
    text = settings.SHOP_SEARCH["TEXT_MODEL"]
    assert SentenceTransformerEncoder.peek_dimensions(image) == 512
    assert SentenceTransformerEncoder.peek_dimensions(text) == 512
    assert SentenceTransformerEncoder.peek_dimensions("/nowhere/model") is None


def test_bf16_vectors_stay_close_to_fp32(settings):
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "navy", "olive")]
    fp32 = get_image_encoder().encode_images(images)
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "PRECISION": "bf16"}
    encoder = get_image_encoder()
    assert encoder.precision == "bf16"
    bf16 = encoder.encode_images(images)
    assert bf16.dtype == np.float32
    assert (fp32 * bf16).sum(axis=1).min() > 0.99


def test_int8_vectors_stay_close_to_fp32(settings):
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "navy", "olive")]
    texts = ["red dress", "rotes Kleid", "лампа"]
    fp32_images = get_image_encoder().encode_images(images)
    fp32_texts = get_text_encoder().encode_texts(texts)
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "PRECISION": "int8",
        "BACKEND": "torch",
    }
    image_encoder, text_encoder = get_image_encoder(), get_text_encoder()
    assert (image_encoder.precision, text_encoder.precision) == ("int8", "int8")
    int8_images = image_encoder.encode_images(images)
    int8_texts = text_encoder.encode_texts(texts)
    assert int8_texts.dtype == np.float32
    assert (fp32_images * int8_images).sum(axis=1).min() > 0.99
    assert (fp32_texts * int8_texts).sum(axis=1).min() > 0.99
    # The weights really are int8 now (a quarter of the memory to read).
    linear = [m for m in text_encoder.model.modules() if type(m).__name__ == "Linear"]
    assert linear and all("quantized" in type(m).__module__ for m in linear)


def test_an_unknown_precision_is_a_clear_error(settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "PRECISION": "fp8"}
    with pytest.raises(ModelLoadError, match="PRECISION"):
        get_image_encoder()


# --- The model's input in one resize ----------------------------------------

SHAPES = [
    Image.effect_mandelbrot((300, 300), (-2, -1.5, 1, 1.5), 60).convert("RGB"),
    Image.effect_mandelbrot((640, 360), (-2, -1, 1, 1), 60).convert("RGB"),  # wide
    Image.effect_mandelbrot((200, 500), (-1, -1.5, 1, 1.5), 60).convert("RGB"),
    Image.effect_mandelbrot((900, 150), (-2, -1, 1, 1), 60).convert("RGB"),  # 6:1
    Image.effect_mandelbrot((20, 24), (-2, -1.5, 1, 1.5), 30).convert("RGB"),
]


def test_clip_images_take_one_resize_and_match_the_models_own_processor():
    from shop_search.encoders.torch_backend import forward, prepare
    from shop_search.images import letterbox

    encoder = SentenceTransformerEncoder(
        get_image_encoder().model_name, precision="fp32", backend="torch"
    )
    assert encoder.image_size == 32  # the tiny CLIP's input square
    ours = encoder.preprocess(SHAPES)["pixel_values"]
    theirs = prepare(encoder.model, [letterbox(image) for image in SHAPES])
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    assert ours.shape == tuple(theirs["pixel_values"].shape)
    expected = forward(encoder.model, theirs, "fp32")
    vectors = encoder.encode_images(SHAPES)
    assert (vectors * expected).sum(axis=1).min() >= 0.999


def test_decoded_batches_come_as_the_models_square_with_errors_in_place():
    import io

    from shop_search.encoders.pixels import decode_batch
    from shop_search.exceptions import ImageError

    encoder = get_image_encoder()
    files = []
    for image in SHAPES[:4]:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG" if image.width > 250 else "PNG", quality=95)
        files.append(buffer.getvalue())
    files.insert(2, b"not an image")
    decoded = decode_batch(files, size=encoder.image_size, workers=2)
    assert isinstance(decoded[2], ImageError) and decoded[2].code
    images = [d for d in decoded if not isinstance(d, ImageError)]
    assert [image.size for image in images] == [(32, 32)] * 4
    expected = encoder.encode_images(SHAPES[:4])
    vectors = encoder.encode_images(images)
    assert (vectors * expected).sum(axis=1).min() >= 0.999
    unsized = decode_batch(files[:2], workers=1)
    assert [image.size for image in unsized] == [(300, 300), (448, 252)]
