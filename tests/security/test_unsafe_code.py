"""No pickle in any trained model, no code-running load in our code, and the scanners work.

The scanners (tests/security/scan.py) are tested on planted bad examples first, so a scanner that
silently finds nothing cannot pass for a clean result.
"""

from __future__ import annotations

import io
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from serving.contract.artifact import read_manifest, write_manifest
from serving.contract.errors import ArtifactError
from serving.predictor import Predictor
from tests.security.scan import code_findings, pickle_findings

SCANNED_CODE = ("serving", "training", "bench")

BAD_CODE = """\
import pickle
import pickle as pk
import joblib
import torch
import yaml
import numpy as np
import pandas as pd
import skops.io as sio
from pickle import loads as from_bytes
from builtins import exec as run

pickle.load(open("m.pkl", "rb"))
pk.loads(b"")
from_bytes(b"")
pickle.Unpickler(None)
joblib.load("m.joblib")
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
sio.load("m.skops")
sio.load("m.skops", trusted=True)
yaml.load("a: 1")
yaml.load("a: 1", Loader=yaml.Loader)
yaml.unsafe_load("a: 1")
np.load("a.npy", allow_pickle=True)
pd.read_pickle("frame.pkl")
eval("1 + 1")
exec("x = 1")
run("x = 1")
"""
SAFE_CODE = """\
import json
import torch
import yaml
import numpy as np
import skops.io as sio
from yaml import SafeLoader

model = torch.nn.Linear(1, 1)
model.eval()
torch.load("m.pt", weights_only=True)
sio.load("m.skops", trusted=["sklearn.pipeline.Pipeline"])
yaml.safe_load("a: 1")
yaml.load("a: 1", Loader=yaml.SafeLoader)
yaml.load("a: 1", SafeLoader)
np.load("a.npy")
json.loads("{}")
"""


def test_the_code_scanner_catches_planted_calls(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(BAD_CODE)
    calls = [n for n, line in enumerate(BAD_CODE.splitlines(), start=1) if "(" in line]
    found = code_findings(bad)
    assert sorted(f.line for f in found) == calls, "\n".join(map(str, found))
    good = tmp_path / "good.py"
    good.write_text(SAFE_CODE)
    assert code_findings(good) == []


def test_serving_training_and_bench_code_never_load_code(root: Path):
    files = [p for folder in SCANNED_CODE for p in sorted((root / folder).rglob("*.py"))]
    assert len(files) > 40  # the walk found the code
    found = [f for path in files for f in code_findings(path, root)]
    assert found == [], "\n".join(map(str, found))


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_the_pickle_scanner_catches_planted_pickles(tmp_path):
    for protocol in (2, 3, 4, 5):
        (tmp_path / f"weights{protocol}.dat").write_bytes(pickle.dumps({"w": 1}, protocol))
    for name in ("head.pkl", "x.pickle", "m.joblib", "state.pt", "pytorch_model.bin"):
        (tmp_path / name).write_bytes(b"")
    _zip(tmp_path / "torch-style.zip", {"archive/data.pkl": b"\x80\x02}q\x00."})
    _zip(tmp_path / "renamed.skops", {"schema.json": b"{}", "blob": pickle.dumps([1], 4)})
    _zip(tmp_path / "objects.skops", {"1.npy": _npy(np.array([{"a": 1}], dtype=object))})
    expected = {
        "weights2.dat",
        "weights3.dat",
        "weights4.dat",
        "weights5.dat",
        "head.pkl",
        "x.pickle",
        "m.joblib",
        "state.pt",
        "pytorch_model.bin",
        "torch-style.zip!archive/data.pkl",
        "renamed.skops!blob",
        "objects.skops!1.npy",
    }
    # Look-alikes that are not pickles: safetensors whose header size starts with 0x80 0x02,
    # numeric numpy members of a skops zip, an ONNX protobuf, JSON.
    header = b'{"__metadata__":{}}'.ljust(0x280, b" ")
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    assert (tmp_path / "model.safetensors").read_bytes()[:2] == b"\x80\x02"
    _zip(tmp_path / "model.skops", {"schema.json": b"{}", "1.npy": _npy(np.zeros(3))})
    (tmp_path / "model.onnx").write_bytes(b"\x08\x08\x12\x18onnx")
    (tmp_path / "config.json").write_text("{}")
    found = pickle_findings(tmp_path)
    assert {f.where for f in found} == expected, "\n".join(map(str, found))


def test_trained_models_hold_no_pickle(smoke_model, tfidf_model):
    for folder in (smoke_model, tfidf_model):
        files = {p.name for p in folder.rglob("*") if p.is_file()}
        assert "manifest.json" in files and files & {"model.safetensors", "model.skops"}
        found = pickle_findings(folder)
        assert found == [], "\n".join(map(str, found))


def test_a_rechecksummed_skops_file_cannot_run_code(tfidf_model, tmp_path):
    """Regression: the skops allow-list trusted whole prefixes (builtins., numpy.), so a model
    file holding FunctionTransformer(numpy.vectorize(eval)) loaded and ran its input as Python."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    folder = tmp_path / "tampered"
    folder.mkdir()
    for name in ("manifest.json", "taxonomy.yaml", "README.md"):
        shutil.copyfile(tfidf_model / name, folder / name)
    runs_text = Pipeline([("run", FunctionTransformer(func=np.vectorize(eval)))])
    sio.dump(runs_text, str(folder / "model.skops"))
    # Someone with write access to the folder can also rewrite the checksums.
    write_manifest(folder, read_manifest(tfidf_model))
    with pytest.raises(ArtifactError, match=r"untrusted types: builtins\.eval, numpy\.vectorize"):
        Predictor.load(folder)
