"""Per-language evaluation: language detection for files without a `lang` column, and by_lang."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.contract.text import detect_lang
from training.evaluate import load_labelled


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Quadcopter with 4K gimbal camera", "en"),
        ("大疆 无人机 航拍 4K 高清 专业", "zh"),
        ("ドローン 空撮 4Kカメラ付き 送料無料", "ja"),
        ("赤外線サーマルカメラ 640x512", "ja"),  # kana decides Japanese even with kanji
        ("RTK GNSS receiver module L1 L2 L5 multi band high precision 高精度", "mixed"),
        ("", "en"),
    ],
)
def test_detect_lang(text: str, lang: str):
    assert detect_lang(text) == lang


def test_load_labelled_takes_lang_column_then_detects(tmp_path: Path, taxonomy):
    rows = [
        {
            "id": "1",
            "title": "FPGA 484FBGA",
            "labels": ["electronics"],
            "lang": "en",
            "split": "test",
        },
        {"id": "2", "title": "无人机 航拍", "labels": ["uav"], "split": "test"},
        {"id": "3", "title": "Cotton shirt", "labels": [], "lang": "klingon", "split": "test"},
        {"id": "4", "title": "ドローン 空撮", "labels": ["uav"], "lang": "ja", "split": "train"},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    every = load_labelled(path, taxonomy)
    assert every.langs == ["en", "zh", "en", "ja"]
    test = load_labelled(path, taxonomy, split="test")
    assert test.langs == ["en", "zh", "en"]
    assert test.y.shape == (3, len(taxonomy.labels))
    assert np.asarray(test.y).sum() == 2
