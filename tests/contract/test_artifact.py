import json
import shutil

import pytest

from serving.contract.artifact import (
    FORMAT_VERSION,
    Calibration,
    DecisionRules,
    LabelThresholds,
    Manifest,
    read_manifest,
    resolve_model_ref,
    verify_artifact,
    write_manifest,
)
from serving.contract.errors import ArtifactError, ChecksumError, FormatVersionError


@pytest.fixture()
def folder(tmp_path, root, taxonomy):
    path = tmp_path / "artifact"
    path.mkdir()
    shutil.copyfile(root / "data" / "taxonomy.yaml", path / "taxonomy.yaml")
    (path / "model.onnx").write_bytes(b"\x08\x01fake graph bytes")
    (path / "sub").mkdir()
    (path / "sub" / "tokenizer.json").write_text("{}")
    labels = taxonomy.labels
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name="dualscreen",
        version="1",
        kind="transformer",
        labels=labels,
        taxonomy_version=taxonomy.version,
        calibration=Calibration(a={lb: 1.5 for lb in labels}, b={lb: -0.5 for lb in labels}),
        thresholds={lb: LabelThresholds(flag=0.8, review=0.3) for lb in labels},
        rules=DecisionRules(),
        base_model="x",
        corpus_hash="abc",
        git_revision="r",
        created_at="2026-11-29T00:00:00+00:00",
        metrics={"test": {"macro_f1": 0.5}},
    )
    write_manifest(path, manifest)
    return path


def test_round_trip_manifest_is_exactly_equal(folder):
    written = json.loads((folder / "manifest.json").read_text())
    loaded = verify_artifact(folder)
    assert loaded.model_dump(mode="json") == written
    assert set(loaded.files) == {"taxonomy.yaml", "model.onnx", "sub/tokenizer.json"}


def test_checksum_mismatch_names_the_file(folder):
    (folder / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="model.onnx: checksum mismatch"):
        verify_artifact(folder)


def test_missing_and_unlisted_files(folder):
    (folder / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not in the manifest: extra.txt"):
        verify_artifact(folder)
    (folder / "extra.txt").unlink()
    (folder / "sub" / "tokenizer.json").unlink()
    with pytest.raises(ChecksumError, match="sub/tokenizer.json listed in the manifest is missing"):
        verify_artifact(folder)


@pytest.mark.parametrize("name", ["model.pkl", "weights.bin", "head.joblib", "state.pt"])
def test_pickle_style_files_are_refused(folder, name):
    (folder / name).write_bytes(b"\x80\x04junk")
    with pytest.raises(ArtifactError, match="can run code"):
        verify_artifact(folder)


def test_format_version_checked(folder):
    data = json.loads((folder / "manifest.json").read_text())
    data["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(FormatVersionError, match="format version 99"):
        read_manifest(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        resolve_model_ref(tmp_path / "nope")
