import pytest

from serving.contract.text import build_text, build_text_from_record, count_words, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("LWIR&nbsp;core<br>640&times;512", "LWIR core 640×512"),
        ("a &amp;amp; b", "a & b"),
        ("<li>12 µm</li><li>NETD &lt;40 mK</li>", "12 μm NETD <40 mK"),
        ("  many\t\tspaces \n\r lines ", "many spaces lines"),
        ("ＧＮＳＳ　モジュール１２３", "GNSS モジュール123"),
        ("zero\u200bwidth\u202eRTL\u00adsoft", "zerowidthRTLsoft"),
        ("nul\x00byte\x07bell", "nulbytebell"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ("", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "raw", ["&amp;lt;b&amp;gt;x", "<<b>>", "&lt;br&gt;x", "Ａ&amp;Ｂ", "x<br/>"]
)
def test_normalize_is_idempotent(raw):
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_build_text_orders_and_labels_fields():
    built = build_text(
        title="Survey GNSS receiver",
        description="<p>1408 channels</p>",
        brand="Acme",
        seller_category="Surveying",
        attributes={"bands": "L1/L2/L5", "empty": ""},
    )
    assert built.text == (
        "Survey GNSS receiver | brand: Acme | category: Surveying | bands: L1/L2/L5 | 1408 channels"
    )
    assert not built.truncated


def test_build_text_handles_missing_and_odd_values():
    assert build_text(None, float("nan"), 42, True).text == "brand: 42 | category: yes"


def test_length_cap_truncates_on_a_word_boundary():
    built = build_text(title="word " * 1000, max_chars=100)
    assert built.truncated
    assert len(built.text) <= 100
    assert not built.text.endswith(" ")
    assert built.text.endswith("word")


def test_record_builder_with_custom_columns():
    record = {"name": "IC FPGA 285 I/O 484FBGA", "maker": "Xilinx", "notes": "RoHS"}
    built = build_text_from_record(record, ["name", "maker", "notes"])
    assert built.text == "IC FPGA 285 I/O 484FBGA | maker: Xilinx | notes: RoHS"


def test_record_builder_folds_attribute_maps():
    built = build_text_from_record(
        {"title": "Thermal core", "attributes": {"resolution": "640x512"}},
        ["title", "attributes"],
    )
    assert built.text == "Thermal core | resolution: 640x512"


def test_count_words_latin_and_cjk():
    assert count_words("IC FPGA 484FBGA") == 3
    assert count_words("无人机航拍") == 2
    assert count_words("!!! ---") == 0
