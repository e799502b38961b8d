"""
A sentence-transformers model's files, read without loading it: where its
folder is, and the dimension of its vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["local_folder", "modules", "peek_dimensions"]


def local_folder(model_name: str) -> Path | None:
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


def modules(folder: Path) -> list[dict[str, Any]]:
    """The module stack of ``modules.json`` (a bare transformers folder: one)."""
    try:
        return list(json.loads((folder / "modules.json").read_text()))
    except (OSError, ValueError):
        return [{"path": ""}]


def peek_dimensions(model_name: str) -> int | None:
    """The output dimension from the config files, or None when unknown."""
    folder = local_folder(model_name)
    if folder is None:
        return None
    for module in reversed(modules(folder)):
        try:
            config = json.loads((folder / module["path"] / "config.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
        for key in ("out_features", "projection_dim"):
            if isinstance(config.get(key), int):
                return config[key]
    return None
