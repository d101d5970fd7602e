"""Training-time noise: the web-offer and benchmark perturbations keep the listing's words."""

from __future__ import annotations

import random
import re

from serving.contract.text import build_text
from training.train import augment_fields, benchmark_tokens, web_offer

ROW = {
    "title": "SecureKey Drive 2TB (AES-256, PIN pad)",
    "description": "Hardware encryption, brute-force wipe.",
    "brand": "Acme",
    "seller_category": "Computers > Storage",
}


def test_a_web_offer_quotes_and_tags_the_title_and_may_add_shop_and_price() -> None:
    rng = random.Random(3)
    offers = [web_offer(ROW["title"], rng) for _ in range(200)]
    assert all(o.startswith(f'"{ROW["title"]}"@') for o in offers)
    assert {re.match(r'"[^"]*"@([a-z-]+)', o).group(1) for o in offers} >= {"en", "en-gb"}  # type: ignore[union-attr]
    priced = [o for o in offers if re.search(r"\| [£€$]\d+\.\d\d ", o)]
    assert 0.5 < len(priced) / len(offers) < 0.9


def test_benchmark_tokens_lowercases_and_spaces_punctuation() -> None:
    assert benchmark_tokens("VPN Client (5-User License) AC-605, Win/Mac") == (
        "vpn client ( 5-user license ) ac-605 , win / mac"
    )


def test_every_perturbation_occurs_and_the_title_words_survive() -> None:
    rng = random.Random(7)
    seen = {"web": 0, "tokens": 0, "html": 0, "dropped": 0}
    for _ in range(2000):
        out = augment_fields(ROW, rng)
        title = out["title"]
        seen["web"] += title.startswith('"')
        seen["tokens"] += " ( " in title
        seen["html"] += "<" in out["description"] or "&" in out["description"]
        seen["dropped"] += not out["brand"] or not out["seller_category"]
        assert "securekey" in title.lower() and "2tb" in title.lower()
        assert build_text(**out).text  # every noisy copy still builds a text
    assert all(count > 50 for count in seen.values()), seen
