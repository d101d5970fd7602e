"""Build the model's input text from a listing's fields: the same function at training and serving.

Normalisation: HTML entities are unescaped and tags dropped, Unicode is NFKC-normalised (full-width
Latin and digits in Chinese and Japanese listings become ASCII), control characters, NUL bytes,
zero-width and bidi-control characters and lone surrogates are removed, whitespace collapses to
single spaces. The result is capped at `max_chars` characters; a capped text says so, so the caller
can report `truncated`. Compromise: the cap counts characters, not tokens; the tokenizer truncates
again at the model's token limit, so anything past it never reaches the model either way.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.contract.listing import CONTENT_FIELDS, TEXT_FIELDS, Listing

DEFAULT_MAX_CHARS = 2000
FIELD_SEPARATOR = " | "

_TAG_RE = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]{0,200})?/?\s*>")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"}
_WS_RE = re.compile(r"\s+")
# Scripts for `detect_lang` (counted with regular expressions: it runs on every blended item).
_KANA_RE = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HAN_RE = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]")
_LATIN_RE = re.compile("[A-Za-z]")
# Words for the insufficient-detail rule: Latin/digit runs, or CJK characters taken two at a time.
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-/]*|[\u3040-\u30ff\u4e00-\u9fff]{2}")


@dataclass(frozen=True)
class BuiltText:
    """A model input text and whether it was cut to the length cap."""

    text: str
    truncated: bool


def normalize_text(value: str) -> str:
    """Return `value` with HTML, Unicode, control characters and whitespace normalised.

    Idempotent: normalize_text(normalize_text(x)) == normalize_text(x).
    """
    text = _SURROGATE_RE.sub("", value)
    # Unescape twice: catalog exports often double-escape ("&amp;amp;").
    for _ in range(2):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG_RE.sub(" ", text)
    text = "".join(
        " " if ch in "\t\n\r\x0b\x0c" else ch
        for ch in text
        if ch not in _INVISIBLE and not _is_dropped_control(ch)
    )
    # NFKC after dropping invisibles: "A\u200b\u0300" must compose to "À" now, not on a second
    # call (NFKC itself never produces a character the line above drops).
    text = unicodedata.normalize("NFKC", text)
    text = _WS_RE.sub(" ", text).strip()
    # A second pass catches entities or tags that NFKC or the first pass produced.
    if ("&" in text and html.unescape(text) != text) or _TAG_RE.search(text):
        return normalize_text(text)
    return text


def _is_dropped_control(ch: str) -> bool:
    category = unicodedata.category(ch)
    if ch in "\t\n\r\x0b\x0c":
        return False
    # Cc control characters (NUL included), Cf format characters such as bidi overrides,
    # Cs surrogates, Co private use, Cn unassigned.
    return category in {"Cc", "Cf", "Cs", "Co", "Cn"}


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas-like sources
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def build_text(
    title: Any = "",
    description: Any = "",
    brand: Any = "",
    seller_category: Any = "",
    attributes: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> BuiltText:
    """Build the model input from listing fields.

    Args:
        title: the listing title.
        description: free-text body.
        brand: brand or manufacturer.
        seller_category: the seller's own category path.
        attributes: key/value specifications (folded in as "key: value").
        extra: other user columns chosen as text columns (folded in as "column: value").
        max_chars: cap on the result's length in characters.

    Returns:
        The text and whether it was truncated.
    """
    parts: list[str] = []
    head = normalize_text(_stringify(title))
    if head:
        parts.append(head)
    b = normalize_text(_stringify(brand))
    if b:
        parts.append(f"brand: {b}")
    c = normalize_text(_stringify(seller_category))
    if c:
        parts.append(f"category: {c}")
    for mapping in (attributes, extra):
        for key, value in (mapping or {}).items():
            k = normalize_text(_stringify(key))
            v = normalize_text(_stringify(value))
            if k and v:
                parts.append(f"{k}: {v}")
    d = normalize_text(_stringify(description))
    if d:
        parts.append(d)
    text = FIELD_SEPARATOR.join(parts)
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        if space > max_chars * 0.8:
            cut = cut[:space]
        return BuiltText(cut.rstrip(), True)
    return BuiltText(text, False)


def listing_from_record(
    record: Mapping[str, Any],
    text_cols: Sequence[str] = CONTENT_FIELDS,
    ident: str | int | None = None,
) -> tuple[Listing, dict[str, str]]:
    """The listing in a file record, and the other chosen text columns.

    Columns named like the listing fields keep their role; any other chosen column is returned in
    the second value, to be folded in as "column: value". The first chosen column stands in for
    the title when there is no `title`. Values become the strings the text builder makes of them.
    """
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for i, col in enumerate(text_cols):
        value = record.get(col)
        if col in CONTENT_FIELDS:
            fields[col] = value
        elif i == 0 and "title" not in text_cols:
            fields["title"] = value
        else:
            extra[col] = _stringify(value)
    attributes = fields.pop("attributes", None)
    if attributes is not None and not isinstance(attributes, Mapping):
        extra["attributes"] = _stringify(attributes)
        attributes = None
    values: dict[str, Any] = {f: _stringify(fields.get(f, "")) for f in TEXT_FIELDS}
    values["attributes"] = {_stringify(k): _stringify(v) for k, v in (attributes or {}).items()}
    # Every value is a string by now: construct without validating, at file-reading speed.
    return Listing.model_construct(id=ident, **values), extra


def build_listing_text(
    listing: Listing,
    max_chars: int = DEFAULT_MAX_CHARS,
    extra: Mapping[str, Any] | None = None,
) -> BuiltText:
    """Build the model input of a listing (and any other text columns of its file row)."""
    return build_text(
        **{f: getattr(listing, f) for f in CONTENT_FIELDS}, extra=extra, max_chars=max_chars
    )


def build_text_from_record(
    record: Mapping[str, Any],
    text_cols: Sequence[str] = TEXT_FIELDS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> BuiltText:
    """Build the model input from a record dict using the chosen text columns.

    Columns named like the listing fields keep their role; any other chosen column is folded in
    as "column: value". The first chosen column stands in for the title when there is no `title`.
    """
    listing, extra = listing_from_record(record, text_cols)
    return build_listing_text(listing, max_chars, extra)


def count_words(text: str) -> int:
    """Count content words (Latin or digit runs, CJK pairs) for the insufficient-detail rule."""
    return len(_WORD_RE.findall(text))


def detect_lang(text: str) -> str:
    """en, zh, ja or mixed from the script of a text's letters (for files without `lang`).

    Any kana makes Japanese; Han without kana makes Chinese; a text whose letters are mostly Latin
    but that holds CJK too is mixed; everything else is en (the corpus has no other languages).
    """
    kana = len(_KANA_RE.findall(text))
    han = len(_HAN_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    cjk = kana + han
    if not cjk:
        return "en"
    if latin > 3 * cjk:
        return "mixed"
    return "ja" if kana else "zh"
