"""Scanners for code-executing formats and calls, used by test_unsafe_code.py.

- `pickle_findings(folder)`: files that a loader could unpickle: pickle-style extensions, the
  pickle protocol header (0x80 then 2..5) at the start of a file, and the same inside zip
  archives (torch.save and skops files are zips), including numpy members with object dtype
  (numpy pickles those).
- `code_findings(path)`: calls that deserialise or run code: pickle/dill/cloudpickle/joblib loads,
  pandas.read_pickle, numpy.load(allow_pickle=True), torch.load without weights_only=True, skops
  loads without explicit trusted types, yaml loads without a safe loader, eval and exec.

Names are resolved through the module's imports (`import skops.io as sio`, `from pickle import
loads`), wherever they occur. Compromise: a call reached through getattr or a variable holding the
function (`f = pickle.loads; f(b)`) is not seen; the scan is a tripwire, not a proof.
"""

from __future__ import annotations

import ast
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt", ".dill")
PICKLE_PROTOCOLS = (2, 3, 4, 5)

ALWAYS_UNSAFE = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "cPickle.load",
    "cPickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "pandas.read_pickle",
    "yaml.unsafe_load",
    "yaml.unsafe_load_all",
    "yaml.full_load",
    "yaml.full_load_all",
    "eval",
    "exec",
    "builtins.eval",
    "builtins.exec",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


@dataclass(frozen=True)
class Finding:
    """One unsafe file or call."""

    where: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.what}"


def _is_pickle_header(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS


def _is_safetensors(path: Path, head: bytes) -> bool:
    # safetensors starts with a little-endian u64 header size whose low byte can be 0x80.
    if path.suffix != ".safetensors" or len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + size <= path.stat().st_size


def _npy_has_objects(data: bytes) -> bool:
    import numpy as np

    handle = io.BytesIO(data)
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        _, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return bool(dtype.hasobject)


def _zip_findings(path: Path, where: str) -> list[Finding]:
    found = []
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            name = f"{where}!{member.filename}"
            with archive.open(member) as handle:
                head = handle.read(1 << 16)
            if member.filename.lower().endswith(PICKLE_SUFFIXES):
                found.append(Finding(name, 0, "pickle-style file name"))
            elif _is_pickle_header(head):
                found.append(Finding(name, 0, "pickle protocol header"))
            elif head.startswith(b"\x93NUMPY") and _npy_has_objects(head):
                found.append(Finding(name, 0, "numpy array of objects (stored as pickle)"))
    return found


def pickle_findings(folder: Path) -> list[Finding]:
    """Every file under `folder` that is, or holds, a pickle."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        where = path.relative_to(folder).as_posix()
        if path.name.lower().endswith(PICKLE_SUFFIXES):
            found.append(Finding(where, 0, f"pickle-style extension {path.suffix}"))
            continue
        with open(path, "rb") as handle:
            head = handle.read(16)
        if _is_pickle_header(head) and not _is_safetensors(path, head):
            found.append(Finding(where, 0, f"pickle protocol {head[1]} header"))
        elif zipfile.is_zipfile(path):
            found.extend(_zip_findings(path, where))
    return found


def _aliases(tree: ast.AST) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _why_unsafe(name: str, call: ast.Call, aliases: dict[str, str]) -> str | None:
    if name in ALWAYS_UNSAFE:
        return f"{name}() can run code from its input"
    if name == "torch.load" and not _is_true(_keyword(call, "weights_only")):
        return "torch.load() without weights_only=True unpickles"
    if name == "numpy.load" and _is_true(_keyword(call, "allow_pickle")):
        return "numpy.load(allow_pickle=True) unpickles"
    if name in ("skops.io.load", "skops.io.loads"):
        trusted = _keyword(call, "trusted")
        if trusted is None or _is_true(trusted):
            return f"{name}() without an explicit list of trusted types"
    if name in ("yaml.load", "yaml.load_all"):
        loader = _keyword(call, "Loader")
        if loader is None and len(call.args) > 1:
            loader = call.args[1]
        loader_name = _dotted(loader, aliases) if loader is not None else None
        if not loader_name or loader_name.split(".")[-1] not in SAFE_YAML_LOADERS:
            return f"{name}() without a safe loader"
    return None


def code_findings(path: Path, root: Path | None = None) -> list[Finding]:
    """Unsafe calls in one Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = _aliases(tree)
    where = path.relative_to(root).as_posix() if root else str(path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        why = _why_unsafe(name, node, aliases) if name else None
        if why:
            found.append(Finding(where, node.lineno, why))
    return found
