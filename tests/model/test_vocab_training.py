"""Fine-tuning with added Chinese and Japanese tokens (model.extend_vocab_min_count,
train.new_token_lr) on the packaged MiniLM and real corpus rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.config import load_config
from training.pipeline import load_data
from training.train import predict_logits, train_transformer

pytestmark = pytest.mark.slow


def _cjk_rows(root) -> list[dict]:
    """Chinese and Japanese training rows of the corpus: the slice surely has characters to add."""
    rows = [
        json.loads(line)
        for line in (root / "data/corpus/corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return [r for r in rows if r.get("split") == "train" and r.get("lang") in ("zh", "ja")][:64]


def _train(root, taxonomy, *overrides: str):
    cfg = load_config(
        root / "training" / "configs" / "smoke.toml",
        [
            "data.max_train_rows=64",
            "data.max_eval_rows=32",
            "train.epochs=1",
            "train.batch_size=16",
            "model.max_tokens=32",
            "model.extend_vocab_min_count=2",
            *overrides,
        ],
    )
    splits, _ = load_data(cfg, taxonomy)
    cjk = _cjk_rows(root)
    y = np.array([[int(lb in r["labels"]) for lb in taxonomy.labels] for r in cjk])
    val = splits["val"]
    return train_transformer(cfg, cjk, y, val.texts, val.y, taxonomy.labels)


def _moved(result) -> float:
    """How far the added rows moved from the [UNK] row they started near."""
    tok = result.tokenizer
    weight = result.model.get_input_embeddings().weight.detach()
    start = weight.shape[0] - result.added_tokens
    return float((weight[start:] - weight[tok.unk_token_id]).abs().max())


def test_added_tokens_train_and_the_table_is_merged_for_saving(root, taxonomy) -> None:
    slow = _train(root, taxonomy)
    fast = _train(root, taxonomy, "train.new_token_lr=0.01")
    for result in (slow, fast):
        assert result.added_tokens > 50
        table = result.model.get_input_embeddings()
        assert type(table) is torch.nn.Embedding  # what save_pretrained and ONNX export expect
        assert table.weight.shape[0] == len(result.tokenizer)
        texts = ["多旋翼无人机 固定翼 航模", "DJI drone 4K camera"]
        logits = predict_logits(result.model, result.tokenizer, texts, 32)
        assert np.isfinite(logits).all()
    # With their own learning rate the added rows move far more in the same 4 steps (both runs
    # start from the same rows: [UNK] plus the same seeded noise, about 0.006 away).
    assert _moved(fast) > _moved(slow) + 0.01
    assert slow.vocab_mapping == {}  # [UNK] start: nothing mapped


def test_a_mapped_start_reports_its_fit(root, taxonomy, tmp_path) -> None:
    # The notes of the ridge map reach the training result (then MLflow and the report).
    from transformers import AutoTokenizer

    from serving.contract.text import build_text
    from tests.unit.test_vocab import _source_model
    from training.base_models import DEFAULT_BASE_MODEL, resolve_base_model
    from training.vocab import MIN_ANCHORS, unknown_characters

    base = resolve_base_model(DEFAULT_BASE_MODEL)
    texts = [
        build_text(
            **{k: r.get(k, "") for k in ("title", "description", "brand", "seller_category")}
        ).text
        for r in _cjk_rows(root)
    ]
    # The source knows the slice's most frequent character that MiniLM reads as [UNK].
    char = unknown_characters(AutoTokenizer.from_pretrained(base), texts, 2)[0]
    known = {char: "wing"}
    source = _source_model(base, tmp_path / "src", 1200, known)
    result = _train(root, taxonomy, f"model.extend_vocab_from='{source}'")
    assert result.added_tokens > 50
    assert result.vocab_mapping["from"] == source
    assert result.vocab_mapping["anchors"] >= MIN_ANCHORS
    # The small source knows one character: every other added character starts from [UNK].
    tok = result.tokenizer
    ids = list(range(len(tok) - result.added_tokens, len(tok)))
    added = {t.strip() for t in tok.convert_ids_to_tokens(ids)}  # added tokens print as " 器 "
    mapped = added & set(known)
    assert mapped == {char}
    assert result.vocab_mapping["unknown_to_source"] == result.added_tokens - len(mapped)
