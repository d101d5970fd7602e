"""The model artifact: one self-describing folder, checked before anything in it is used.

Layout (a reader needs nothing but the folder):

    manifest.json        format version, labels, taxonomy version, calibration, thresholds,
                         decision rules, base model, corpus hash, git revision, metrics,
                         the resolved training config and the sha256 of every other file
    taxonomy.yaml        the taxonomy the model was trained against
    config.json          transformers config with id2label           (transformer models)
    tokenizer files      tokenizer.json and friends                  (transformer models)
    model.safetensors    fp32 weights                                (transformer models)
    model.onnx           fp32 ONNX graph                             (transformer models)
    model.int8.onnx      int8 ONNX graph, static or dynamic (int8)   (transformer models)
    cascade.skops        the cascade's TF-IDF first stage             (transformer models)
    static.safetensors   the cascade's static embedding table and router (when distilled)
    blend.skops          TF-IDF part added to the transformer's logits (manifest `blend`)
    model.skops          TF-IDF + logistic regression pipeline       (tfidf models)
    README.md            generated model card

Loading checks the format version, refuses pickle-style files, and verifies every checksum,
the manifest's own included (`manifest_sha256`, over its other fields), so a flipped digit in a
threshold is refused rather than served. Manifests written before that field existed carry none
and are read without that one check.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.contract.errors import ArtifactError, ChecksumError, FormatVersionError
from serving.contract.taxonomy import Taxonomy, load_taxonomy

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TAXONOMY_FILE = "taxonomy.yaml"
# Extensions whose loaders can execute code (pickle and friends): never accepted in an artifact.
UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt", ".npy", ".npz")


# How a transformer turns token states into logits (see serving/backends/pooling.py).
Pooling = Literal["cls", "mean"]


class Calibration(BaseModel):
    """Per-label Platt scaling of logits: p = sigmoid(a * logit + b)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["platt", "none"] = "platt"
    a: dict[str, float]
    b: dict[str, float]


class LabelThresholds(BaseModel):
    """Calibrated-probability thresholds of one label: >= flag flags, >= review sends to review."""

    model_config = ConfigDict(extra="forbid")

    flag: float = Field(ge=0.0, le=1.0001)
    review: float = Field(ge=0.0, le=1.0001)


class ReviewStep(BaseModel):
    """One step of the review-band search: lower one label's review threshold to `review`.

    `cost_per_gain` is the number of validation items without a label that the step sends to
    review per newly caught item with one; `recall` and `review_rate` are the validation any-label
    recall and the share of validation items flagged or sent to review after the step.
    """

    model_config = ConfigDict(extra="forbid")

    label: str
    review: float = Field(ge=0.0, le=1.0001)
    cost_per_gain: float = Field(ge=0.0)
    recall: float
    review_rate: float


class ReviewPath(BaseModel):
    """The whole review-band search, so a review budget can be chosen at serving time.

    The search is greedy and never depends on the budget, so the thresholds for a budget are the
    steps taken, from the flag thresholds, until the first step that costs more than the budget.
    `budget` is the one the `thresholds` field was computed with (None: no limit).
    """

    model_config = ConfigDict(extra="forbid")

    steps: list[ReviewStep] = Field(default_factory=list)
    budget: float | None = None
    review_floor: float = 0.0
    # A label at or above this calibrated probability always goes to review at least, whatever
    # the budget (1.0: no ceiling, as in artifacts from before it existed).
    review_ceiling: float = Field(default=1.0, gt=0.0, le=1.0)
    start_recall: float = 0.0
    start_review_rate: float = 0.0


class DecisionRules(BaseModel):
    """Rules outside the per-label thresholds."""

    model_config = ConfigDict(extra="forbid")

    min_words: int = 3
    max_chars: int = 2000
    max_tokens: int = 128
    # Put before every built text at tokenisation (e5 models expect "passage: ").
    text_prefix: str = ""
    # Put the words for the figures a text states before it (serving/contract/specs.py); the
    # model was trained reading them.
    spec_hints: bool = False
    # Which reading of the figures (serving/contract/specs.py SPEC_HINTS_VERSION) the model learnt.
    spec_hints_version: int = 1
    # How token states become logits (serving/backends/pooling.py): the model's own [CLS] head,
    # or the masked mean of the last hidden states into the same classifier layer.
    pooling: Pooling = "cls"


class StaticTable(BaseModel):
    """A static embedding table distilled (model2vec) from the artifact's fine-tuned transformer.

    Rows are indexed by the artifact's own tokenizer ids. A text is encoded as model2vec encodes
    it: its first `median_token_length * max_tokens` characters, tokenised without special tokens
    (only the `added_tokens` named here are matched as whole tokens), cut to `max_tokens`, unknown
    tokens dropped, the rows averaged and, with `normalize`, scaled to unit length.
    """

    model_config = ConfigDict(extra="forbid")

    file: str = "static.safetensors"
    dims: int = Field(ge=1)
    pca_dims: int | None = None
    sif_coefficient: float | None = None
    max_tokens: int | None = 512
    median_token_length: int = Field(default=1, ge=1)
    normalize: bool = True
    added_tokens: list[str] = Field(default_factory=list)
    distilled_from: str = ""


class CascadeStage(BaseModel):
    """First-stage settings when a cheap model screens items before the transformer."""

    model_config = ConfigDict(extra="forbid")

    clear_below: float
    model_file: str
    a: dict[str, float]
    b: dict[str, float]
    max_clear_share_labelled: float = 0.005
    # Which labelled validation items that share counted: "caught", those the transformer flags
    # or sends to review; "labelled", all of them (artifacts before issue 14's last change).
    clear_rule: Literal["caught", "labelled"] = "labelled"
    validation: dict[str, float] = Field(default_factory=dict)
    # How the first stage's risk is read: "max_label", the highest calibrated label probability;
    # or "any_label", a logistic regression trained on "has any label" (the first stage's extra
    # last column), Platt-scaled with any_a, any_b; or "static", a logistic regression on the
    # static embedding (`static`) plus that any-label column, its coefficients in the static
    # table's file, Platt-scaled with any_a, any_b.
    router: Literal["max_label", "any_label", "static"] = "max_label"
    any_a: float = 1.0
    any_b: float = 0.0
    static: StaticTable | None = None


class Blend(BaseModel):
    """The transformer's raw logits plus `weight` times a TF-IDF model's (issue 12).

    Both models were fitted on the same training split; `weight` was chosen on validation (mean
    per-label average precision of the sum, which no per-label calibration changes), and the
    manifest's calibration and thresholds apply to the sum. `model_file` is a skops TF-IDF
    pipeline whose first decision-function columns are the labels in manifest order.
    """

    model_config = ConfigDict(extra="forbid")

    model_file: str
    weight: float
    # Languages (`detect_lang` of the built text) whose TF-IDF part has its own weight: TF-IDF
    # words are weak on Chinese and Japanese listings, which have no spaces between words.
    weight_by_lang: dict[str, float] = Field(default_factory=dict)
    validation: dict[str, float] = Field(default_factory=dict)


class Int8Guard(BaseModel):
    """When the int8 graph's answer could change the decision, ask the fp32 graph instead.

    `margin` is in calibrated-logit units: an item whose decision would differ anywhere within
    +/- margin of its int8 calibrated logits is re-scored with model.onnx. Chosen on validation
    so that guarded int8 decisions agree with fp32 at `target_agreement`.
    """

    model_config = ConfigDict(extra="forbid")

    margin: float
    target_agreement: float = 0.998
    validation: dict[str, float] = Field(default_factory=dict)


class Int8Graph(BaseModel):
    """How model.int8.onnx was quantised, and how it compared with fp32 on validation.

    `static`: activation scales fixed from calibration data, so an item's result does not depend
    on its batch and int8 inputs are batched; `dynamic`: scales computed per run, so each item
    runs alone. `validation` holds the chosen graph's decision agreement with fp32 (guarded and
    unguarded) and the guard's re-score share; `candidates` the same figures for each graph
    tried; `fallback_reason` why the static graph was not used, if it was not.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["static", "dynamic"]
    calibration: str | None = None
    validation: dict[str, float] = Field(default_factory=dict)
    candidates: dict[str, dict[str, float]] = Field(default_factory=dict)
    fallback_reason: str | None = None


class Manifest(BaseModel):
    """Everything a reader needs to use the artifact correctly."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int
    name: str
    version: str
    kind: Literal["transformer", "tfidf"]
    labels: list[str]
    taxonomy_version: str
    calibration: Calibration
    thresholds: dict[str, LabelThresholds]
    rules: DecisionRules
    base_model: str
    corpus_hash: str
    git_revision: str
    created_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    training_data: dict[str, Any] = Field(default_factory=dict)
    onnx_agreement: dict[str, float] = Field(default_factory=dict)
    cascade: CascadeStage | None = None
    blend: Blend | None = None
    int8_guard: Int8Guard | None = None
    int8: Int8Graph | None = None
    review_path: ReviewPath | None = None
    # The same search at other review ceilings (`decide.review_ceilings`), so that serving can
    # choose a ceiling without retraining (`--review-ceiling`); `review_path` is the one in use.
    other_review_paths: list[ReviewPath] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)
    manifest_sha256: str | None = None


def _manifest_digest(data: dict[str, Any]) -> str:
    """The sha256 of a manifest's fields other than `manifest_sha256`, as canonical JSON."""
    rest = {k: v for k, v in data.items() if k != "manifest_sha256"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _artifact_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    )


def check_no_unsafe_files(folder: Path) -> None:
    """Raise ArtifactError if the folder holds a pickle-style file."""
    for path in _artifact_files(folder):
        if path.suffix.lower() in UNSAFE_SUFFIXES:
            raise ArtifactError(
                f"{path}: {path.suffix} files can run code when loaded; dualscreen artifacts use "
                "safetensors, ONNX and skops only"
            )


def write_manifest(folder: str | Path, manifest: Manifest) -> Manifest:
    """Checksum every file in `folder`, store the checksums in the manifest and write it.

    Args:
        folder: the artifact folder, with every other file already written.
        manifest: the manifest; its `files` field is replaced.

    Returns:
        The manifest as written.
    """
    folder = Path(folder)
    check_no_unsafe_files(folder)
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in _artifact_files(folder)}
    manifest = manifest.model_copy(update={"files": files})
    data = manifest.model_dump(mode="json")
    manifest = manifest.model_copy(update={"manifest_sha256": _manifest_digest(data)})
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def read_manifest(folder: str | Path) -> Manifest:
    """Read and validate the manifest without checking file checksums."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: not a model folder (it does not exist or is a file)")
    if not path.exists():
        raise ArtifactError(f"{folder}: no {MANIFEST}; not a dualscreen model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: format version {version!r}; this dualscreen reads version {FORMAT_VERSION}"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ArtifactError(f"{path}: invalid manifest: {problems}") from None
    expected = manifest.manifest_sha256
    if expected is not None and _manifest_digest(data) != expected:
        raise ChecksumError(
            f"{path}: checksum mismatch (the manifest's own manifest_sha256 does not match its "
            "content); the manifest was changed or corrupted"
        )
    return manifest


def verify_artifact(folder: str | Path) -> Manifest:
    """Check format version, unsafe files and every checksum; return the manifest.

    Raises:
        FormatVersionError: the manifest's format version is not FORMAT_VERSION.
        ChecksumError: a listed file is missing or its sha256 differs (the error names it).
        ArtifactError: the folder holds unlisted or pickle-style files, or the manifest is invalid.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_no_unsafe_files(folder)
    present = {p.relative_to(folder).as_posix() for p in _artifact_files(folder)}
    for name, expected in manifest.files.items():
        path = folder / name
        if name not in present:
            raise ChecksumError(f"{folder}: file {name} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"{path}: checksum mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
                "the file was changed or corrupted"
            )
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise ArtifactError(f"{folder}: files not in the manifest: {', '.join(unlisted)}")
    if TAXONOMY_FILE not in manifest.files:
        raise ArtifactError(f"{folder}: the artifact has no {TAXONOMY_FILE}")
    return manifest


def load_artifact_taxonomy(folder: str | Path, manifest: Manifest) -> Taxonomy:
    """Load the artifact's taxonomy and check it matches the manifest's labels and version."""
    taxonomy = load_taxonomy(Path(folder) / TAXONOMY_FILE)
    if taxonomy.version != manifest.taxonomy_version:
        raise ArtifactError(
            f"{folder}: taxonomy version {taxonomy.version} differs from the manifest's "
            f"{manifest.taxonomy_version}"
        )
    taxonomy.check_labels(manifest.labels, where=f"{folder}/{MANIFEST}")
    return taxonomy


def resolve_model_ref(ref: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Turn a folder path or an MLflow URI (`models:/dualscreen@champion`) into a local folder.

    The registry is a pointer resolved once: the URI's artifacts are downloaded to `cache_dir`
    (a temporary folder when None) and the local folder is returned.
    """
    text = str(ref)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            import mlflow.artifacts
        except ImportError:  # pragma: no cover - mlflow is a core dependency
            raise ArtifactError("MLflow is not installed; pass a model folder instead") from None
        # The store named by MLFLOW_TRACKING_URI, else the project's SQLite file when the
        # process runs in the project folder (what `dualscreen train` writes to).
        tracking = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking and Path("mlflow.db").exists():
            tracking = f"sqlite:///{Path('mlflow.db').resolve()}"
        if tracking:
            # models:/ URIs resolve through the registry URI, a process-wide MLflow setting.
            mlflow.set_tracking_uri(tracking)
            mlflow.set_registry_uri(tracking)
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=text,
                dst_path=str(cache_dir) if cache_dir else None,
                tracking_uri=tracking,
            )
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; report them as ours
            raise ArtifactError(f"cannot resolve {text}: {exc}") from None
        path = Path(local)
        if not (path / MANIFEST).exists() and (path / "model" / MANIFEST).exists():
            path = path / "model"
        return path
    path = Path(text)
    if not path.exists():
        raise ArtifactError(f"{path}: model folder does not exist")
    return path
