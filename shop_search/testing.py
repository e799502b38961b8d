"""
Tiny, randomly initialised models for tests, built offline in seconds.

They have the module stack of the real models, so they load through the same
production code (``SentenceTransformer(path)``):

- the image model is a sentence-transformers folder with one CLIP module
  (``0_CLIPModel``: a transformers ``CLIPModel``, its CLIP BPE tokenizer and
  image processor), like ``clip-ViT-B-32``;
- the text model is ``0_Transformer`` (DistilBERT with a WordPiece tokenizer
  that covers Latin, Cyrillic, Arabic, Devanagari and CJK) + ``1_Pooling``
  (mean) + ``2_Dense`` (no bias, identity activation) projecting to the same
  dimension, like ``clip-ViT-B-32-multilingual-v1``.

Their vectors are random but deterministic for a seed: rankings mean nothing.
Use them in a shop's own tests::

    from shop_search.testing import build_test_models
    paths = build_test_models(tmp_path)
    settings.SHOP_SEARCH = {"IMAGE_MODEL": paths.image, "TEXT_MODEL": paths.text}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TestModels",
    "build_test_models",
    "build_test_detector",
    "DIMENSIONS",
    "IndexView",
    "index_view",
    "store_vectors",
]

#: Dimension of the tiny models' vectors; match EmbeddingField(dimensions=...).
DIMENSIONS = 512

_CORPUS = """
red blue green black white yellow pink purple orange brown grey striped dotted
checked plain dress shirt t-shirt trousers jeans skirt jacket coat shoe shoes
sneaker boot boots bag handbag backpack chair table sofa lamp mug cup pot pan
plate bowl vase hat cap watch scarf plant bottle a photo of the for with and
rot blau grün schwarz weiß kleid hemd hose schuh tasche stuhl tisch lampe
rouge bleu vert noir blanc robe chemise pantalon chaussure sac chaise table
rojo azul verde negro blanco vestido camisa zapato bolso silla mesa lámpara
красный синий зелёный чёрный белый платье рубашка обувь сумка стул стол лампа
أحمر أزرق أخضر أسود أبيض فستان قميص حذاء حقيبة كرسي طاولة مصباح
लाल नीला हरा काला सफेद पोशाक कमीज जूता बैग कुर्सी मेज दीपक
红色 蓝色 绿色 黑色 白色 连衣裙 衬衫 鞋 包 椅子 桌子 灯 杯子
赤 青 緑 黒 白 ドレス シャツ 靴 バッグ 椅子 机 ランプ
"""


@dataclass(frozen=True)
class TestModels:
    """Paths of the built models, to use as IMAGE_MODEL and TEXT_MODEL."""

    __test__ = False  # not a pytest test class

    image: str
    text: str


#: Layer sizes: "tiny" for tests, "full" for benchmarks (the real models'
#: architectures, CLIP ViT-B/32 and a 6-layer DistilBERT, with random weights).
SIZES = {
    "tiny": {
        "text": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        "student": {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 2},
    },
    "full": {
        "text": {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
        },
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
        "student": {"dim": 768, "hidden_dim": 3072, "n_layers": 6, "n_heads": 12},
    },
}


def build_test_models(
    directory: str | Path,
    *,
    seed: int = 0,
    dimensions: int = DIMENSIONS,
    size: str = "tiny",
) -> TestModels:
    """
    Build (or reuse, if already built) the image and text models under
    ``directory`` and return their paths. ``dimensions`` is the output size
    of both (512, like the real models, unless a test needs another);
    ``size="full"`` builds the real architectures (random weights) for
    benchmarks.
    """
    directory = Path(directory)
    prefix = "tiny" if size == "tiny" else size
    image_dir = directory / f"{prefix}-clip"
    text_dir = directory / f"{prefix}-multilingual-text"
    if not (image_dir / "modules.json").exists():
        _build_clip(image_dir, seed, dimensions, SIZES[size])
    if not (text_dir / "modules.json").exists():
        _build_text(text_dir, seed, dimensions, SIZES[size])
    return TestModels(image=str(image_dir), text=str(text_dir))


def _words() -> list[str]:
    return sorted(set(_CORPUS.split()))


def _build_clip(folder: Path, seed: int, dimensions: int, sizes: dict) -> None:
    import torch
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    torch.manual_seed(seed)
    # Learn real BPE merges on a small corpus with CLIP's own pre-tokenizer.
    bootstrap = CLIPTokenizer()
    backend: Tokenizer = bootstrap.backend_tokenizer
    trainer = BpeTrainer(
        vocab_size=1200,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS.splitlines() * 3, trainer=trainer)
    model_json = json.loads(backend.to_str())["model"]
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
        for m in model_json["merges"]
    ]
    # As in CLIP's real vocabulary, the special tokens take the last ids
    # (OWL-ViT, for one, treats token id 0 at the start as padding).
    specials = ["<|startoftext|>", "<|endoftext|>"]
    ordinary = sorted(
        (t for t in model_json["vocab"] if t not in specials),
        key=model_json["vocab"].__getitem__,
    )
    vocab = {token: i for i, token in enumerate([*ordinary, *specials])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    assert isinstance(backend.model, BPE)

    image_size = sizes["vision"]["image_size"]
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            **sizes["text"],
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config=sizes["vision"],
        projection_dim=dimensions,
    )
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    module_dir = folder / "0_CLIPModel"
    module_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(module_dir)
    processor.save_pretrained(module_dir)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "0_CLIPModel",
                    "type": "sentence_transformers.models.CLIPModel",
                }
            ],
            indent=2,
        )
    )
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"similarity_fn_name": "cosine"})
    )


def _build_text(folder: Path, seed: int, dimensions: int, sizes: dict) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import Dense, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # pragma: no cover - sentence-transformers 5
        from sentence_transformers.models import Dense, Pooling, Transformer
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    torch.manual_seed(seed)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = set()
    for word in _words():
        pieces.add(word)
        pieces.update(word)
        pieces.update(f"##{c}" for c in word)
    vocab = specials + sorted(pieces)
    build = folder / "_build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = DistilBertTokenizer(vocab=str(build / "vocab.txt"), do_lower_case=True)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        **sizes["student"],
        max_position_embeddings=128,
        pad_token_id=0,
    )
    transformer_dir = build / "distilbert"
    DistilBertModel(config).eval().save_pretrained(transformer_dir)
    tokenizer.save_pretrained(transformer_dir)

    transformer = Transformer(str(transformer_dir), max_seq_length=128)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    dense = Dense(
        in_features=transformer.get_embedding_dimension(),
        out_features=dimensions,
        bias=False,
        activation_function=torch.nn.Identity(),
    )
    SentenceTransformer(modules=[transformer, pooling, dense], device="cpu").save(
        str(folder)
    )
    import shutil

    shutil.rmtree(build)


def build_test_detector(directory: str | Path, *, seed: int = 0) -> str:
    """
    Build (or reuse) a tiny random-weight OWL-ViT detector (transformers
    ``OwlViTForObjectDetection`` with a CLIP tokenizer and OWL-ViT image
    processor) for ``OwlVitDetector`` tests; returns its folder, to use as
    ``SHOP_SEARCH['DETECTOR_MODEL']``.
    """
    import torch
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    folder = Path(directory) / "tiny-owlvit"
    if (folder / "config.json").exists():
        return str(folder)
    clip = Path(build_test_models(directory, seed=seed).image) / "0_CLIPModel"
    tokenizer = CLIPTokenizer.from_pretrained(clip, model_max_length=16)
    torch.manual_seed(seed)
    config = OwlViTConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    size = {"height": 64, "width": 64}
    processor = OwlViTProcessor(
        image_processor=OwlViTImageProcessor(size=size, crop_size=size),
        tokenizer=tokenizer,
    )
    OwlViTForObjectDetection(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


# --- reading and writing the index in tests ------------------------------------


@dataclass
class IndexView:
    """What shop_search holds for one product, for assertions in tests."""

    status: str
    vector: Any  # the first image's vector (numpy), or None
    vectors: dict[str, Any]  # source -> vector
    image_model: str
    error: str
    attempts: int
    indexed_at: Any


def index_view(obj: Any, image_model: str | None = None) -> IndexView:
    """The index's view of ``obj`` for the serving (or the given) image model."""
    from django.contrib.contenttypes.models import ContentType

    from .models import ImageVector, serving
    from .status import entry_for, status_of

    using = obj._state.db or "default"
    image_model = image_model or serving(using).image_model
    content_type = ContentType.objects.db_manager(using).get_for_model(
        type(obj), for_concrete_model=False
    )
    rows = (
        ImageVector.objects.using(using)
        .filter(
            content_type=content_type, object_pk=str(obj.pk), image_model=image_model
        )
        .order_by("position", "pk")
        .values_list("source", "vector")
    )
    import numpy as np

    vectors = {source: np.asarray(vector) for source, vector in rows}
    entry = entry_for(obj, image_model)
    return IndexView(
        status=status_of(obj),
        vector=next(iter(vectors.values()), None),
        vectors=vectors,
        image_model=entry.image_model if entry else "",
        error=entry.error if entry else "",
        attempts=entry.attempts if entry else 0,
        indexed_at=entry.indexed_at if entry else None,
    )


def store_vectors(
    products: list[Any], vectors: Any, *, image_model: str | None = None
) -> None:
    """
    Write ``vectors`` (one per product) as each product's only image vector,
    as if indexed, without encoding: for search tests at scale. The products'
    declared images decide the digest, so their status reads "indexed".
    """
    from django.contrib.contenttypes.models import ContentType

    from .encoders import image_model_id
    from .models import ImageVector, IndexEntry
    from .registry import declaration, images_digest

    if not products:
        return
    model = type(products[0])
    using = products[0]._state.db or "default"
    # The configured model (what serves once recorded); reading the serving
    # one would record the settings of the moment.
    image_model = image_model or image_model_id()
    decl = declaration(model)
    content_type = ContentType.objects.db_manager(using).get_for_model(
        model, for_concrete_model=False
    )
    rows, entries = [], []
    for product, vector in zip(products, vectors, strict=True):
        sources = decl.image_sources(product)
        source = sources[0] if sources else None
        rows.append(
            ImageVector(
                content_type=content_type,
                object_pk=str(product.pk),
                group_pk=decl.group_key(product),
                image_model=image_model,
                source=source.key if source else "image",
                position=0,
                fingerprint=source.fingerprint if source else "",
                vector=vector,
            )
        )
        entries.append(
            IndexEntry(
                content_type=content_type,
                object_pk=str(product.pk),
                image_model=image_model,
                digest=images_digest(sources),
            )
        )
    ImageVector.objects.using(using).bulk_create(rows, batch_size=1000)
    IndexEntry.objects.using(using).bulk_create(entries, batch_size=1000)
