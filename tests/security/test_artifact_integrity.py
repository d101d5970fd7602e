"""One changed byte in any file the manifest lists stops the real loader, naming the file.

tests/contract/test_artifact.py covers a checksum mismatch, missing and unlisted files and pickle
extensions on a hand-made folder; this walks every listed file of both trained smoke models
through `Predictor.load`, the path `serve`, `score` and `review import` take.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from serving.contract.artifact import read_manifest, verify_artifact
from serving.contract.errors import ChecksumError
from serving.predictor import Predictor


def _linked_copy(source: Path, target: Path) -> None:
    # Symlinks keep the 250 MB of weights out of tmp; the loader follows them like files.
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        link = target / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, link)


def _flip_one_byte(link: Path) -> None:
    data = bytearray(link.resolve().read_bytes())
    data[len(data) // 2] ^= 0x01
    link.unlink()
    link.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["smoke_model", "tfidf_model"])
def test_a_changed_byte_in_any_listed_file_stops_loading(which, request, tmp_path):
    source: Path = request.getfixturevalue(which)
    folder = tmp_path / "model"
    _linked_copy(source, folder)
    verify_artifact(folder)  # the linked copy itself is intact
    listed = sorted(read_manifest(source).files)
    assert "taxonomy.yaml" in listed and len(listed) >= 3
    for name in listed:
        _flip_one_byte(folder / name)
        with pytest.raises(ChecksumError, match=re.escape(f"{name}: checksum mismatch")):
            Predictor.load(folder)
        (folder / name).unlink()
        os.symlink(source / name, folder / name)


def test_a_file_added_to_a_real_model_stops_loading(tfidf_model, tmp_path):
    from serving.contract.errors import ArtifactError

    folder = tmp_path / "model"
    _linked_copy(tfidf_model, folder)
    shutil.copyfile(tfidf_model / "taxonomy.yaml", folder / "added_tokens.json")
    with pytest.raises(ArtifactError, match="not in the manifest: added_tokens.json"):
        Predictor.load(folder)
