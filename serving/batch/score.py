"""Score a catalog file in chunks: streaming, in input order, resumable, nothing lost or doubled.

Rows are read through the shared reader in chunks; each chunk is built into texts, scored
(the backend length-buckets or fans items out), written in input order, and only then
checkpointed: output offset, rejects offset, id-index offset, counters and the last input line.
A killed run resumed with `--resume` cuts its files back to the checkpoint and continues after
that line, so the final output is byte-identical to an uninterrupted run.

Memory stays flat: one chunk of rows is held at a time; duplicate ids are found at the end from a
file of 16-byte (id hash, line) records rather than an in-memory set.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.batch.writers import open_writer, output_format
from serving.contract.errors import InputError, OutputError, TruncatedInputError
from serving.contract.listing import ScoredListing, score_columns
from serving.contract.readers import (
    ColumnMapping,
    RejectedRow,
    Row,
    detect_format,
    read_records,
)
from serving.contract.text import listing_from_record
from serving.predictor import Predictor

CHECKPOINT_VERSION = 1


class Enqueued(Protocol):
    """What the review intake reports for one chunk (`serving.review.intake.IntakeResult`)."""

    @property
    def queued(self) -> int: ...
    @property
    def already_queued(self) -> int: ...


EnqueueFn = Callable[[list[dict[str, Any]], list[ScoredListing]], Enqueued]
"""`--enqueue-review`: a chunk's rows and their scored listings to the review intake."""


@dataclass
class Summary:
    """Counts of one scoring run (persisted in the checkpoint, so resumed runs report the same)."""

    rows_read: int = 0
    scored: int = 0
    rejected: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {"flag": 0, "review": 0, "clear": 0})
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    enqueued: int = 0
    already_queued: int = 0
    duplicate_ids: int = 0
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    rows_per_second: float = 0.0
    review_share: float = 0.0
    output: str = ""
    rejects: str = ""
    resumed: bool = False


@dataclass
class ScoreOptions:
    """What to score and how."""

    input: Path
    output: Path
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    input_format: str | None = None
    output_format: str | None = None
    chunk_size: int = 2048
    resume: bool = False
    overwrite: bool = False
    enqueue: EnqueueFn | None = None


def rejects_path(output: Path) -> Path:
    """`OUTPUT.rejects.jsonl`."""
    return output.with_name(output.name + ".rejects.jsonl")


def checkpoint_path(output: Path) -> Path:
    """`OUTPUT.checkpoint.json`."""
    return output.with_name(output.name + ".checkpoint.json")


def _ids_path(output: Path) -> Path:
    return output.with_name(output.name + ".ids.bin")


def fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime and a hash of the first MiB: enough to notice a changed input on resume."""
    stat = path.stat()
    with open(path, "rb") as handle:
        head = hashlib.sha256(handle.read(1 << 20)).hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


def count_rows(path: Path, fmt: str | None) -> int | None:
    """Rows in the file for the progress bar (None when it would need decompressing)."""
    kind, gz = detect_format(path, fmt)
    if gz:
        return None
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowInvalid, OSError):
            return None  # the reader says what is wrong with the file
    lines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            lines += block.count(b"\n")
    return max(0, lines - (1 if kind in ("csv", "tsv") else 0))


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _chunks(results: Iterator[Row | RejectedRow], size: int) -> Iterator[list[Row | RejectedRow]]:
    chunk: list[Row | RejectedRow] = []
    for result in results:
        chunk.append(result)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _until_truncated(
    results: Iterator[Row | RejectedRow], truncated: list[TruncatedInputError]
) -> Iterator[Row | RejectedRow]:
    """The reader's results up to a break in a compressed input, which is kept in `truncated`.

    The rows before the break are scored and written like any others (the last, partial chunk
    included); the run then finishes its output and raises the error.
    """
    try:
        yield from results
    except TruncatedInputError as exc:
        truncated.append(exc)


def _id_hash(value: Any) -> int:
    digest = hashlib.blake2b(str(value).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class Scorer:
    """Scores files with one loaded predictor (its backend local, or on Ray actors)."""

    def __init__(self, predictor: Predictor, engine: str = "local") -> None:
        self.predictor = predictor
        self.engine = engine

    def _options_key(self, opts: ScoreOptions) -> dict[str, Any]:
        m = self.predictor.manifest
        return {
            "id_col": opts.mapping.id_col,
            "text_cols": list(opts.mapping.text_cols),
            "input_format": opts.input_format,
            "output_format": opts.output_format,
            "chunk_size": opts.chunk_size,
            "model": m.name,
            "model_version": m.version,
            "backend": self.predictor.backend.name,
            "review_budget": m.review_path.budget if m.review_path else None,
            "review_ceiling": m.review_path.review_ceiling if m.review_path else None,
        }

    def score_file(
        self, opts: ScoreOptions, progress: Callable[[int, int | None], None] | None = None
    ) -> Summary:
        """Score `opts.input` into `opts.output` (and `OUTPUT.rejects.jsonl`).

        Args:
            opts: input, output, column mapping, chunk size, resume/overwrite.
            progress: called with (rows done, total rows or None) after every chunk.

        Returns:
            The run's summary.

        Raises:
            OutputError: an output file could not be written (a full disk, say); the checkpoint
                of the last whole chunk stands, so `resume=True` continues from it.
        """
        try:
            return self._score_file(opts, progress)
        except OSError as exc:
            fix = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
            raise OutputError(
                f"{exc.filename or opts.output}: {exc.strerror or exc}; scoring stopped and its "
                f"last checkpoint is kept: {fix}, then run again with --resume to continue"
            ) from exc

    def _score_file(
        self, opts: ScoreOptions, progress: Callable[[int, int | None], None] | None
    ) -> Summary:
        started = time.perf_counter()
        out_kind = output_format(opts.output, opts.output_format)
        in_kind, _ = detect_format(opts.input, opts.input_format)
        if not opts.input.exists():
            raise InputError(f"{opts.input}: no such file")
        ckpt_file = checkpoint_path(opts.output)
        rej_file = rejects_path(opts.output)
        ids_file = _ids_path(opts.output)
        state: dict[str, Any] | None = None
        if ckpt_file.exists():
            if not (opts.resume or opts.overwrite):
                raise InputError(
                    f"{opts.output}: an unfinished run left {ckpt_file.name}; pass --resume to "
                    "continue it or --overwrite to start again"
                )
            if opts.resume:
                state = json.loads(ckpt_file.read_text(encoding="utf-8"))
                self._check_resumable(state, opts)
        elif opts.output.exists() and not (opts.overwrite or opts.resume):
            raise InputError(f"{opts.output} exists; pass --overwrite to replace it")
        summary = Summary(**state["summary"]) if state else Summary()
        summary.resumed = state is not None
        summary.output, summary.rejects = str(opts.output), str(rej_file)
        columns: list[str] | None = state["columns"] if state else None
        renamed: dict[str, str] = state["renamed"] if state else {}
        last_line = state["last_line"] if state else 0
        writer = open_writer(opts.output, out_kind, state["output_pos"] if state else None)
        rejects = open(rej_file, "r+b" if state and rej_file.exists() else "wb")  # noqa: SIM115
        ids = open(ids_file, "r+b" if state and ids_file.exists() else "wb")  # noqa: SIM115
        if state:
            rejects.truncate(state["rejects_pos"])
            rejects.seek(state["rejects_pos"])
            ids.truncate(state["ids_pos"])
            ids.seek(state["ids_pos"])
        total = count_rows(opts.input, opts.input_format)
        elapsed_before = summary.seconds
        labels = self.predictor.labels
        for label in labels:
            summary.per_label.setdefault(label, {"flag": 0, "review": 0})
        truncated: list[TruncatedInputError] = []
        try:
            reader = _until_truncated(
                read_records(
                    opts.input, fmt=opts.input_format, mapping=opts.mapping, start_after=last_line
                ),
                truncated,
            )
            for chunk in _chunks(reader, opts.chunk_size):
                good = [r for r in chunk if isinstance(r, Row)]
                if columns is None:
                    columns, renamed = self._columns(good, in_kind, out_kind)
                out_rows = self._score_rows(
                    good, opts.mapping, columns, renamed, summary, opts.enqueue
                )
                writer.write_chunk(out_rows, columns + self._score_columns(in_kind, out_kind))
                for r in chunk:
                    if isinstance(r, RejectedRow):
                        record = {"line": r.line, "reason": r.reason, "raw": r.raw}
                        rejects.write(
                            (json.dumps(record, ensure_ascii=False) + "\n").encode(
                                "utf-8", "replace"
                            )
                        )
                        summary.rejected += 1
                rejects.flush()
                os.fsync(rejects.fileno())
                pairs = np.array(
                    [
                        (_id_hash(r.data.get(opts.mapping.id_col)), r.line)
                        for r in good
                        if r.data.get(opts.mapping.id_col) not in (None, "")
                    ],
                    dtype=np.int64,
                ).reshape(-1, 2)
                ids.write(pairs.tobytes())
                ids.flush()
                os.fsync(ids.fileno())
                summary.rows_read += len(chunk)
                last_line = chunk[-1].line
                summary.seconds = elapsed_before + time.perf_counter() - started
                _atomic_json(
                    ckpt_file,
                    {
                        "version": CHECKPOINT_VERSION,
                        "input": str(opts.input),
                        "fingerprint": fingerprint(opts.input),
                        "options": self._options_key(opts),
                        "last_line": last_line,
                        "output_pos": writer.position(),
                        "rejects_pos": rejects.tell(),
                        "ids_pos": ids.tell(),
                        "columns": columns,
                        "renamed": renamed,
                        "summary": asdict(summary),
                    },
                )
                if progress is not None:
                    progress(summary.rows_read, total)
        except BaseException:
            # After a failed write: nothing past the checkpoint counts, so drop unwritten bytes
            # rather than have a close (or the garbage collector) raise or append them later.
            for handle in (rejects, ids):
                with contextlib.suppress(OSError):
                    handle.close()
            writer.abort()
            raise
        rejects.close()
        ids.close()
        if columns is None:  # empty input: still write an (empty) output with score columns
            columns = []
            writer.write_chunk([], list(self._score_columns(in_kind, out_kind)))
        writer.finish()
        self._find_duplicates(ids_file, summary, opts.mapping.id_col)
        summary.seconds = elapsed_before + time.perf_counter() - started
        summary.rows_per_second = (
            round(summary.scored / summary.seconds, 1) if summary.seconds else 0.0
        )
        summary.review_share = (
            round(summary.decisions["review"] / summary.scored, 4) if summary.scored else 0.0
        )
        # Checkpoint first: killed between the two, a resume must not find a checkpoint whose
        # ids file is gone (it would pad a new one with zeros and report false duplicates).
        ckpt_file.unlink(missing_ok=True)
        ids_file.unlink(missing_ok=True)
        if truncated:
            raise TruncatedInputError(
                f"{truncated[0]}; the {summary.rows_read:,} rows before the break are in "
                f"{opts.output} and {rej_file.name}"
            )
        return summary

    def _check_resumable(self, state: dict[str, Any], opts: ScoreOptions) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise InputError(
                "the checkpoint was written by another dualscreen version; use --overwrite"
            )
        if state["fingerprint"] != fingerprint(opts.input):
            raise InputError(f"{opts.input} changed since the interrupted run; use --overwrite")
        if state["options"] != self._options_key(opts):
            raise InputError(
                "options or model differ from the interrupted run: "
                f"{state['options']}; use --overwrite or the same options"
            )

    def _columns(
        self, good: list[Row], in_kind: str, out_kind: str
    ) -> tuple[list[str], dict[str, str]]:
        columns: list[str] = []
        for row in good:
            for key in row.data:
                if key not in columns:
                    columns.append(key)
        reserved = set(score_columns(self.predictor.labels)) | {"extra_fields"}
        renamed = {c: f"input_{c}" for c in columns if c in reserved}
        return [renamed.get(c, c) for c in columns], renamed

    def _score_columns(self, in_kind: str, out_kind: str) -> list[str]:
        extra = ["extra_fields"] if in_kind == "jsonl" and out_kind != "jsonl" else []
        return extra + score_columns(self.predictor.labels)

    def _score_rows(
        self,
        good: list[Row],
        mapping: ColumnMapping,
        columns: list[str],
        renamed: dict[str, str],
        summary: Summary,
        enqueue: EnqueueFn | None = None,
    ) -> list[dict[str, Any]]:
        if not good:
            return []
        listings, extras = zip(
            *(listing_from_record(r.data, mapping.text_cols) for r in good), strict=True
        )
        results = self.predictor.score(listings, extras)
        known = set(columns)
        out = []
        for row, result in zip(good, results, strict=True):
            record = {renamed.get(k, k): v for k, v in row.data.items()}
            extra = {k: v for k, v in record.items() if k not in known}
            if extra:
                record = {k: v for k, v in record.items() if k in known}
                record["extra_fields"] = extra
            record.update(result.output_columns())
            for label, decision in result.label_decisions.items():
                if decision != "clear":
                    summary.per_label[label][decision] += 1
            summary.decisions[result.decision] += 1
            for reason in result.reasons:
                summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
            out.append(record)
        if enqueue is not None:
            # The intake admits the 'review' rows and makes each row the same queue item as
            # `review import` would; idempotent, so a resumed chunk adds nothing twice.
            done = enqueue([r.data for r in good], results)
            summary.enqueued += done.queued
            summary.already_queued += done.already_queued
        summary.scored += len(good)
        return out

    @staticmethod
    def _find_duplicates(ids_file: Path, summary: Summary, id_col: str) -> None:
        if not ids_file.exists() or ids_file.stat().st_size == 0:
            return
        pairs = np.fromfile(ids_file, dtype=np.int64).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        hashes = pairs[order, 0]
        dup = np.zeros(len(hashes), dtype=bool)
        dup[1:] = hashes[1:] == hashes[:-1]
        summary.duplicate_ids = int(dup.sum())
        lines = pairs[order, 1]
        examples = []
        for i in np.nonzero(dup)[0][:20]:
            examples.append(
                {"line": int(lines[i]), "first_line": int(lines[i - 1]), "column": id_col}
            )
        summary.duplicate_examples = examples
