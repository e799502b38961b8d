"""The tiny test models have the module stack of the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from django.core.management import call_command
from sentence_transformers import SentenceTransformer

from shop_search.testing import build_test_models


def test_image_model_is_a_single_clip_module(settings):
    folder = Path(settings.SHOP_SEARCH["IMAGE_MODEL"])
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.CLIPModel"]
    config = json.loads((folder / "0_CLIPModel" / "config.json").read_text())
    assert config["architectures"] == ["CLIPModel"]
    assert config["projection_dim"] == 512


def test_text_model_is_distilbert_mean_pooling_and_identity_dense(settings):
    model = SentenceTransformer(settings.SHOP_SEARCH["TEXT_MODEL"], device="cpu")
    transformer, pooling, dense = list(model)
    assert type(transformer.auto_model).__name__ == "DistilBertModel"
    assert pooling.get_config_dict()["pooling_mode"] == "mean"
    assert isinstance(dense.activation_function, torch.nn.Identity)
    assert dense.linear.bias is None
    assert dense.linear.out_features == 512
    # a real WordPiece tokenizer that splits CJK into characters
    assert model.tokenizer.tokenize("红色") == ["红", "色"]


def test_testmodels_command_builds_loadable_models(tmp_path, capsys):
    call_command("shop_search_testmodels", str(tmp_path))
    out = capsys.readouterr().out
    assert "IMAGE_MODEL" in out
    paths = build_test_models(tmp_path)  # reuses what the command built
    assert SentenceTransformer(paths.image, device="cpu").encode(["a"]).shape == (
        1,
        512,
    )
