"""The spec hint: stated figures read, normalised and worded at the labelling guide's lines."""

from __future__ import annotations

import pytest

from serving.contract.artifact import DecisionRules
from serving.contract.errors import ArtifactError
from serving.contract.specs import (
    SPEC_HINTS_VERSION,
    ModelInput,
    model_input,
    read_specs,
    spec_hint,
)


@pytest.mark.parametrize(
    ("text", "rate", "bits"),
    [
        ("Sabrix 12-bit 6.4 GSPS RF-sampling ADC", 6.4e9, 12),
        ("ADC 12-bit 65MSPS LFCSP-48", 65e6, 12),
        ("18-bit 2 MSPS SAR ADC", 2e6, 18),
        ("16-bit 500 kSPS ADC", 5e5, 16),
        ("4 channels, 20 GSa/s, 12-bit vertical resolution", 20e9, 12),
        ("DAC 14 bit 1.6 GS/s", 1.6e9, 14),
        ("高速ADC 16位 1MSPS", 1e6, 16),
        ("A/Dコンバータ 14ビット 250Msps", 250e6, 14),
        ("3 Msamples/s converter", 3e6, None),
        ("OSCILLOSCOPE 2.5GHZ 4CH 20GSA/S 12BIT", 20e9, 12),
        ("adc 10 bit 40msps module", 40e6, 10),
        ("Ultra-Small, Low-Power, 860-SPS, 16-Bit ADC", 860.0, 16),
        ("16-Bit, 500-kSPS, 4-Channel SAR ADC", 5e5, 16),
    ],
)
def test_sample_rates_and_bits_are_read_in_base_units(text, rate, bits):
    specs = read_specs(text)
    assert specs.sample_rate == pytest.approx(rate)
    assert specs.bits == bits


@pytest.mark.parametrize(
    ("text", "hz"),
    [
        ("SPECTRUM ANALYZER 9KHZ-3.2GHZ W/ TG", 3.2e9),
        ("Bandwidth 200 MHz, 1 GSa/s", 200e6),
        ("gain block DC to 6 GHz", 6e9),
        ("oscilloscope 2,5 GHz", 2.5e9),  # decimal comma
        ("synthesiser 1,000 MHz", 1e9),  # thousands separator
        ("10 MHz sine output; 12 V supply", 10e6),
    ],
)
def test_the_largest_stated_frequency_counts(text, hz):
    assert read_specs(text).frequency == pytest.approx(hz)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # The guide's thresholds are inclusive.
        ("PLL synthesiser 3 GHz output", "frequency 3 ghz or more"),
        ("PLL synthesiser 2.99 GHz output", "frequency 1 to 3 ghz"),
        ("oscilloscope 1 GHz bandwidth", "frequency 1 to 3 ghz"),
        ("oscilloscope 500 MHz bandwidth", "frequency under 1 ghz"),
        ("ADC 100 MSPS", "sample rate 100 msps or more"),
        ("ADC 99 MSPS", "sample rate 1 to 100 msps"),
        ("ADC 200 kSPS", "sample rate under 1 msps"),
        ("16-bit ADC", "resolution 16 bits or more"),
        ("12-bit ADC", "resolution under 16 bits"),
    ],
)
def test_buckets_follow_the_labelling_guide(text, words):
    assert words in spec_hint(text)


@pytest.mark.parametrize(
    ("text", "met"),
    [
        ("12-bit 6.4 GSPS ADC", True),  # 100 MSPS or more
        ("18-bit 2 MSPS ADC", True),  # 16 bits at 1 MSPS or more
        ("16-bit 1 MSPS ADC", True),
        ("16-bit 500 kSPS ADC", False),
        ("12-bit 65 MSPS ADC", False),
        ("65 MSPS ADC", False),
    ],
)
def test_the_converter_rule(text, met):
    hint = spec_hint(text)
    assert ("fast converter rule met" in hint) is met
    assert ("fast converter rule not met" in hint) is (not met)


def test_power_thrust_and_axes():
    assert "power 1 kw or more" in spec_hint("1.5 kW fibre laser cutting source")
    assert "power under 100 w" in spec_hint("40W CO2 laser engraver")
    assert "power 100 w to 1 kw" in spec_hint("500 W fibre laser")
    assert "power under 100 w" in spec_hint("green laser pointer 5mW")  # milli, not mega
    assert "thrust 400 n or more" in spec_hint("small turbojet, 450 N thrust")
    assert "thrust 400 n or more" in spec_hint("turbine engine 45 kgf")  # 441 N
    assert "thrust under 400 n" in spec_hint("model turbine 180N")
    assert "4 or more axes" in spec_hint("5-axis CNC machining centre")
    assert "under 4 axes" in spec_hint("3 axis hobby router")


def test_a_bare_newton_needs_a_thrust_word():
    # "N-type", "400N" as a model number: no thrust without an engine or thrust word.
    assert read_specs("SMA to N-type adapter, 400N series").thrust_n is None
    assert read_specs("jet engine 400N").thrust_n == pytest.approx(400.0)


def test_no_figures_no_hint():
    assert spec_hint("FPGA trainer board with USB power") == ""
    assert spec_hint("") == ""
    assert spec_hint("版本 V2 第3代") == ""


def test_hint_format():
    assert spec_hint("ADC 12-bit 65MSPS") == (
        "specs: sample rate 1 to 100 msps; resolution under 16 bits; fast converter rule not met. "
    )


def test_model_input_puts_prefix_then_hint_then_text():
    text = "spectrum analyzer 9 kHz to 7.5 GHz"
    assert ModelInput("passage: ", True)(text) == (
        "passage: specs: frequency 3 ghz or more. " + text
    )
    assert ModelInput("passage: ", False)(text) == "passage: " + text
    assert ModelInput()(text) == text
    texts = [text, "plain mug"]
    assert ModelInput().many(texts) is texts
    assert ModelInput(spec_hints=True).many(texts) == [spec_hint(text) + text, "plain mug"]


def test_model_input_of_an_artifact_follows_its_rules():
    assert model_input(DecisionRules()) == ModelInput("", False)
    assert model_input(DecisionRules(text_prefix="passage: ", spec_hints=True)) == ModelInput(
        "passage: ", True
    )


def test_a_model_trained_on_other_hints_is_refused():
    other = DecisionRules(spec_hints=True, spec_hints_version=SPEC_HINTS_VERSION + 1)
    with pytest.raises(ArtifactError, match="spec hints version"):
        model_input(other)
    # Without hints the version does not matter.
    assert model_input(other.model_copy(update={"spec_hints": False})) == ModelInput()
