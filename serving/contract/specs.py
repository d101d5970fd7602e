"""Stated figures as words: the spec hint put before a model's input text.

Several labels turn on a figure, not a kind of item (LABELING.md): an ADC or DAC of 100 MSPS or
more, or of 16 bits at 1 MSPS or more; an RF part or synthesiser for 3 GHz and above; an
oscilloscope or analyser of 1 GHz or more; a laser of 1 kW; a turbine of 400 N thrust; a machine
tool of 4 or more axes. A word-piece model reads "2.5 GSPS" as four unrelated pieces and has seen
few product types on each side of each line, so it guesses these from the words around the
figure. `spec_hint` reads the figures a listing states (sample rates, frequencies, bits, watts,
thrust, axes), normalises their units and puts the largest of each, bucketed at the guide's
lines, in front of the text in words the model knows:

    "specs: sample rate 100 msps or more; frequency 1 to 3 ghz; fast converter rule met. "

The model still decides what the item is: the hint says "3 ghz or more" for a Wi-Fi router too.
It goes in front so that truncation at the token limit never cuts it. Artifacts say whether their
model was trained with it (`DecisionRules.spec_hints`); train and serve build it with this module.

Compromise: the largest figure of each kind is taken, whatever it qualifies (an oscilloscope's
"5 GSa/s" sample rate is a sample rate, though its line is its bandwidth); ranges count by their
upper end ("DC to 6 GHz"); figures written in CJK numerals are not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.contract.errors import ArtifactError

if TYPE_CHECKING:
    from serving.contract.artifact import DecisionRules

# Bump whenever `spec_hint` words a text differently: a model reads the hints it was trained on.
SPEC_HINTS_VERSION = 1

_NUM = r"(\d+(?:[.,]\d+)?)"
# Listings write "mhz" and "msps" for mega; watts are the exception ("5mW" laser pointers).
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "G": 1e9, "g": 1e9, "T": 1e12}
_SI_WATTS = {"": 1.0, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6}
# "125 MSPS", "2.5GS/s", "5 GSa/s", "1 Gsps", "500-kSPS", "860-SPS", "3 Msamples/s".
_RATE_RE = re.compile(
    _NUM + r"[\s-]?([kKmMgGT]?)\s?(?i:sps|s/s|sa/s|samples?/s(?:ec)?\b|samples? per second)"
)
# "6 GHz", "DC-18GHz", "9 kHz"; not "GHz-class" words without a number.
_FREQ_RE = re.compile(_NUM + r"\s?([kKMGT]?)Hz\b", re.IGNORECASE)
_BITS_RE = re.compile(r"(?<![\d.])(\d{1,2})\s?-?\s?(?:bits?\b|位|ビット)", re.IGNORECASE)
_WATT_RE = re.compile(_NUM + r"\s?([kKmM]?)W\b")
_THRUST_RE = re.compile(_NUM + r"\s?(kN|N|kgf|lbf|lbs? thrust)\b")
_AXES_RE = re.compile(r"(?<![\d.])(\d)\s?-?\s?(?:axis|axes|轴|軸)", re.IGNORECASE)
_THRUST_WORDS = ("thrust", "推力", "turbine", "turbojet", "engine", "motor", "エンジン")
_NEWTONS = {"kN": 1000.0, "N": 1.0, "kgf": 9.80665, "lbf": 4.44822}


def _number(raw: str) -> float | None:
    # "2,5" is a decimal comma; "1,000" a thousands separator.
    if "," in raw:
        whole, frac = raw.split(",", 1)
        raw = f"{whole}{frac}" if len(frac) == 3 else f"{whole}.{frac}"
    try:
        return float(raw)
    except ValueError:
        return None


def _largest(pattern: re.Pattern[str], text: str, scale: dict[str, float] = _SI) -> float | None:
    best: float | None = None
    for m in pattern.finditer(text):
        value = _number(m.group(1))
        if value is None:
            continue
        value *= scale.get(m.group(2), 1.0)
        best = value if best is None else max(best, value)
    return best


@dataclass(frozen=True)
class Specs:
    """The largest figure of each kind a text states (None: not stated)."""

    sample_rate: float | None = None  # samples per second
    frequency: float | None = None  # hertz
    bits: int | None = None
    watts: float | None = None
    thrust_n: float | None = None
    axes: int | None = None


def read_specs(text: str) -> Specs:
    """The figures `text` states, in base units."""
    bits = [int(m.group(1)) for m in _BITS_RE.finditer(text) if 4 <= int(m.group(1)) <= 32]
    axes = [int(m.group(1)) for m in _AXES_RE.finditer(text) if 1 <= int(m.group(1)) <= 9]
    thrust: float | None = None
    lowered = text.lower()
    for m in _THRUST_RE.finditer(text):
        unit = m.group(2)
        if unit.startswith("lb"):
            unit = "lbf"
        value = _number(m.group(1))
        # A bare "N" is too common ("N-type", "400N" as a model number) to count on its own.
        if value is None or (unit == "N" and not any(w in lowered for w in _THRUST_WORDS)):
            continue
        newtons = value * _NEWTONS[unit]
        thrust = newtons if thrust is None else max(thrust, newtons)
    return Specs(
        sample_rate=_largest(_RATE_RE, text),
        frequency=_largest(_FREQ_RE, text),
        bits=max(bits) if bits else None,
        watts=_largest(_WATT_RE, text, _SI_WATTS),
        thrust_n=thrust,
        axes=max(axes) if axes else None,
    )


def _bucket(value: float, lines: tuple[tuple[float, str], ...], top: str) -> str:
    for line, words in lines:
        if value < line:
            return words
    return top


def spec_hint(text: str) -> str:
    """The words for the figures `text` states ("" when it states none of these kinds)."""
    s = read_specs(text)
    parts: list[str] = []
    if s.sample_rate is not None:
        rate_lines = ((1e6, "under 1 msps"), (1e8, "1 to 100 msps"))
        parts.append("sample rate " + _bucket(s.sample_rate, rate_lines, "100 msps or more"))
    if s.frequency is not None:
        parts.append(
            "frequency "
            + _bucket(s.frequency, ((1e9, "under 1 ghz"), (3e9, "1 to 3 ghz")), "3 ghz or more")
        )
    if s.bits is not None:
        parts.append("resolution " + ("16 bits or more" if s.bits >= 16 else "under 16 bits"))
    if s.sample_rate is not None:
        wide = s.bits is not None and s.bits >= 16
        fast = s.sample_rate >= 1e8 or (wide and s.sample_rate >= 1e6)
        parts.append("fast converter rule " + ("met" if fast else "not met"))
    if s.watts is not None:
        watt_lines = ((100.0, "under 100 w"), (1000.0, "100 w to 1 kw"))
        parts.append("power " + _bucket(s.watts, watt_lines, "1 kw or more"))
    if s.thrust_n is not None:
        parts.append("thrust " + ("400 n or more" if s.thrust_n >= 400 else "under 400 n"))
    if s.axes is not None:
        parts.append("4 or more axes" if s.axes >= 4 else "under 4 axes")
    if not parts:
        return ""
    return "specs: " + "; ".join(parts) + ". "


@dataclass(frozen=True)
class ModelInput:
    """What a transformer reads for a built text: the base model's prefix, the spec hint, the text.

    One object at training, export and serving, so the three build the same input.
    """

    prefix: str = ""
    spec_hints: bool = False

    def __call__(self, text: str) -> str:
        if self.spec_hints:
            return self.prefix + spec_hint(text) + text
        return self.prefix + text

    def many(self, texts: list[str]) -> list[str]:
        """Every text's model input (the texts themselves when there is nothing to add)."""
        if not self.prefix and not self.spec_hints:
            return texts
        return [self(t) for t in texts]


def model_input(rules: DecisionRules) -> ModelInput:
    """What an artifact's transformer reads for a built text.

    Raises ArtifactError for a model trained on another version of the spec hints.
    """
    if rules.spec_hints and rules.spec_hints_version != SPEC_HINTS_VERSION:
        raise ArtifactError(
            f"the model was trained with spec hints version {rules.spec_hints_version}; this "
            f"dualscreen builds version {SPEC_HINTS_VERSION}: retrain it, or serve it with the "
            "dualscreen release it was trained with"
        )
    return ModelInput(prefix=rules.text_prefix, spec_hints=rules.spec_hints)
