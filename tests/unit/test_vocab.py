"""Vocabulary extension for Chinese and Japanese characters (training/vocab.py), on the packaged
MiniLM tokenizer and model."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from serving.contract.errors import ConfigError
from training.base_models import DEFAULT_BASE_MODEL, resolve_base_model
from training.vocab import (
    MIN_ANCHORS,
    extend_vocabulary,
    mapped_rows,
    merge_embeddings,
    split_embeddings,
    unknown_characters,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["多旋翼无人机 固定翼", "多旋翼 航模", "四轴飞行器 多旋翼", "Drone 翼展 1.2 m"]


@pytest.fixture(scope="module")
def base() -> str:
    return resolve_base_model(DEFAULT_BASE_MODEL)


def _model(base: str) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)


def test_unknown_characters_counts_only_unknown_ones(base: str) -> None:
    tok = AutoTokenizer.from_pretrained(base)
    assert tok.tokenize("翼") == [tok.unk_token]
    assert tok.tokenize("定") != [tok.unk_token]  # in the English BERT vocabulary
    unknown = {ch for ch in "多旋翼无人机" if tok.tokenize(ch) == [tok.unk_token]}
    assert {"翼", "旋"} <= unknown
    # 翼 appears 5 times, 多 and 旋 3 times, 无 人 机 once; Latin letters are never counted.
    found = unknown_characters(tok, TEXTS, min_count=3)
    assert found[0] == "翼"
    assert set(found) == {"多", "旋", "翼"} & unknown
    assert unknown_characters(tok, TEXTS, min_count=6) == []
    assert "定" not in unknown_characters(tok, TEXTS * 5, min_count=1)


def test_extension_gives_each_character_its_own_id_and_starts_from_unk(base: str) -> None:
    tok = AutoTokenizer.from_pretrained(base)
    model = _model(base)
    before_rows = model.get_input_embeddings().weight.shape[0]
    unk_row = model.get_input_embeddings().weight[tok.unk_token_id].detach().clone()
    before_ids = tok("多旋翼")["input_ids"]
    assert before_ids[1:-1] == [tok.unk_token_id] * 3

    added = extend_vocabulary(tok, model, TEXTS, min_count=2, freeze_embeddings=False)

    assert "翼" in added and "多" in added
    ids = tok("多旋翼")["input_ids"][1:-1]
    assert len(set(ids)) == 3 and tok.unk_token_id not in ids
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == before_rows + len(added) == len(tok)
    new = weight[tok.convert_tokens_to_ids(added)].detach()
    # Each new row is the [UNK] row plus small noise, and the rows differ from one another.
    assert float((new - unk_row).abs().max()) < 0.2 * float(unk_row.abs().max())
    assert not torch.equal(new[0], new[1])
    # Latin text tokenizes as before.
    assert (
        tok("Drone wingspan 1.2 m")["input_ids"]
        == AutoTokenizer.from_pretrained(base)("Drone wingspan 1.2 m")["input_ids"]
    )


def test_extension_survives_saving(base: str, tmp_path: object) -> None:
    from pathlib import Path

    from tokenizers import Tokenizer

    folder = Path(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(base)
    extend_vocabulary(tok, _model(base), TEXTS, min_count=2, freeze_embeddings=False)
    tok.save_pretrained(folder)
    # What serving/backends/onnx.py reads.
    served = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in ("多旋翼 drone", "航模 翼展 12 m"):
        assert served.encode(text).ids == tok(text)["input_ids"]


def test_off_frozen_and_nothing_to_add(base: str) -> None:
    tok = AutoTokenizer.from_pretrained(base)
    model = _model(base)
    assert extend_vocabulary(tok, model, TEXTS, min_count=0, freeze_embeddings=False) == []
    assert extend_vocabulary(tok, model, ["plain English"], 1, freeze_embeddings=False) == []
    assert len(tok) == model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ConfigError, match="freeze_embeddings"):
        extend_vocabulary(tok, model, TEXTS, min_count=2, freeze_embeddings=True)


def test_sentence_piece_tokenizers_are_left_alone(base: str) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0), ("多", -1.0), ("翼", -1.0), ("a", -2.0)]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(Unigram(vocab, 0)), unk_token="<unk>")
    model = _model(base)
    assert extend_vocabulary(tok, model, TEXTS, min_count=1, freeze_embeddings=False) == []
    assert len(tok) == 4


def test_split_rows_train_apart_and_merge_back(base: str) -> None:
    tok = AutoTokenizer.from_pretrained(base)
    model = _model(base).eval()
    added = extend_vocabulary(tok, model, TEXTS, min_count=2, freeze_embeddings=False)
    batch = tok(["多旋翼 drone frame", "航模 翼展"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    start = len(tok) - len(added)
    extra = split_embeddings(model, start)
    assert extra.shape[0] == len(added)
    out = model(**batch).logits
    torch.testing.assert_close(out, before)
    out.sum().backward()
    # The added rows get gradients of their own (only the rows the batch used are non-zero).
    assert extra.grad is not None and float(extra.grad.abs().sum()) > 0
    used = tok.convert_tokens_to_ids(["翼"])[0] - start
    assert float(extra.grad[used].abs().sum()) > 0
    with torch.no_grad():
        extra[used] += torch.linspace(-1.0, 1.0, extra.shape[1])  # LayerNorm undoes a constant
        changed = model(**batch).logits
    merge_embeddings(model)
    table = model.get_input_embeddings()
    assert isinstance(table, torch.nn.Embedding) and table.weight.shape[0] == len(tok)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, changed)
    assert not torch.allclose(changed, before)


def test_new_token_lr_needs_the_extension() -> None:
    from pathlib import Path

    from training.config import load_config

    smoke = Path(__file__).resolve().parents[2] / "training/configs/smoke.toml"
    with pytest.raises(ConfigError, match="extend_vocab_min_count"):
        load_config(smoke, ["train.new_token_lr=1e-3"])
    cfg = load_config(smoke, ["train.new_token_lr=1e-3", "model.extend_vocab_min_count=2"])
    assert cfg.train.new_token_lr == 1e-3


def _source_model(base: str, folder: object, n_words: int, chars: dict[str, str]) -> str:
    """A small BERT whose word rows are a fixed rotation of MiniLM's rows (plus noise) for
    `n_words` English words, and whose row for each character of `chars` is the rotated row of the
    English word it maps to: a source model that "knows" what 翼 means."""
    import re
    from pathlib import Path

    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = AutoTokenizer.from_pretrained(base)
    table = _model(base).get_input_embeddings().weight.detach()
    words = sorted(w for w in tok.get_vocab() if re.fullmatch(r"[a-z]{3,}", w))
    words = sorted(set(words[:: max(1, len(words) // n_words)][:n_words]) | set(chars.values()))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + words + list(chars)
    out = Path(str(folder))
    out.mkdir(parents=True, exist_ok=True)
    wordpiece = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    wordpiece.normalizer = BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = BertPreTokenizer()
    PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(out)
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(table.shape[1], table.shape[1], generator=gen))
    rows = [table[tok.convert_tokens_to_ids(w)] for w in words + list(chars.values())]
    body = torch.stack(rows) @ rotation
    body += 0.05 * body.std() * torch.randn(body.shape, generator=gen)
    weight = torch.cat([0.01 * torch.randn(len(special), table.shape[1], generator=gen), body])
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=table.shape[1],
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=32,
    )
    model = BertModel(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(weight)
    model.save_pretrained(out)
    return str(out)


def _nearest_word(tok: object, table: torch.Tensor, row: torch.Tensor) -> str:
    centred = table - table.mean(dim=0)
    sims = torch.nn.functional.normalize(centred, dim=1) @ (row - table.mean(dim=0))
    return str(tok.convert_ids_to_tokens(int(sims.argmax())))  # type: ignore[attr-defined]


def test_mapped_rows_carry_a_character_to_its_english_word(base: str, tmp_path: object) -> None:
    meaning = {"翼": "wing", "热": "heat", "钛": "titanium"}
    source = _source_model(base, f"{tmp_path}/src", 1200, meaning)
    tok = AutoTokenizer.from_pretrained(base)
    table = _model(base).get_input_embeddings().weight.detach()

    rows, notes = mapped_rows(tok, table.numpy(), ["翼", "热", "钛", "船"], source)

    assert notes["from"] == source and notes["anchors"] >= 1200
    assert notes["held_out_nearest"] >= 0.9  # a rotation plus 5 % noise is easy to carry
    assert notes["unknown_to_source"] == 1  # 船 is not in the source vocabulary
    got = [_nearest_word(tok, table, torch.from_numpy(r)) for r in rows[:3]]
    assert got == ["wing", "heat", "titanium"]
    torch.testing.assert_close(torch.from_numpy(rows[3]), table[tok.unk_token_id])
    # Rescaled to ordinary rows' size, not shrunk by the ridge fit.
    centred = table - table.mean(dim=0)
    mean_norm = float(centred.norm(dim=1).mean())
    for r in rows[:3]:
        assert (
            0.5 * mean_norm
            < float((torch.from_numpy(r) - table.mean(dim=0)).norm())
            < 2 * mean_norm
        )

    # Through extend_vocabulary: the added rows start from the mapped ones.
    model = _model(base)
    through: dict[str, object] = {}
    added = extend_vocabulary(
        tok, model, ["翼 热 翼 热"], 2, False, init_from=source, notes=through
    )
    assert added == ["热", "翼"]
    # The notes reach the caller (the run's parameters and report), not only the log.
    assert through["from"] == source and through["unknown_to_source"] == 0
    assert through["anchors"] == notes["anchors"]
    weight = model.get_input_embeddings().weight.detach()
    assert (
        _nearest_word(tok, weight[: len(tok) - 2], weight[tok.convert_tokens_to_ids("翼")])
        == "wing"
    )


def test_mapped_rows_need_enough_shared_words(base: str, tmp_path: object) -> None:
    source = _source_model(base, f"{tmp_path}/src", MIN_ANCHORS // 2, {"翼": "wing"})
    tok = AutoTokenizer.from_pretrained(base)
    table = _model(base).get_input_embeddings().weight.detach().numpy()
    with pytest.raises(ConfigError, match="single tokens in both vocabularies"):
        mapped_rows(tok, table, ["翼"], source)


def test_extend_vocab_from_needs_the_extension() -> None:
    from pathlib import Path

    from training.config import load_config

    smoke = Path(__file__).resolve().parents[2] / "training/configs/smoke.toml"
    with pytest.raises(ConfigError, match="extend_vocab_from needs"):
        load_config(smoke, ["model.extend_vocab_from='multilingual-e5-small'"])


def test_mapping_notes_reach_the_run_parameters() -> None:
    from training.pipeline import _flat_metrics
    from training.report import vocabulary_line

    info = {
        "added_tokens": 412,
        "vocab_mapping": {
            "from": "/cache/e5",
            "anchors": 5445,
            "held_out_nearest": 0.772,
            "unknown_to_source": 3,
        },
    }
    flat = _flat_metrics({}, info)
    assert flat["added_tokens"] == 412.0
    assert flat["vocab_mapping.anchors"] == 5445.0
    assert flat["vocab_mapping.held_out_nearest"] == 0.772
    assert flat["vocab_mapping.unknown_to_source"] == 3.0
    assert "vocab_mapping.from" not in flat
    line = vocabulary_line(info)
    assert "Added 412 Chinese/Japanese" in line and "`/cache/e5`" in line
    assert "5445 shared words" in line and "0.772" in line and "3 unknown" in line
    assert vocabulary_line({"added_tokens": 9}).endswith("start from [UNK].")
