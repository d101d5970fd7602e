"""The review UI in a real browser: Debian's Chromium, headless, driven by Playwright (issue 6).

The API and the review UI run in one uvicorn process (as `make run` serves them) on a real
SQLite file, with the smoke model loaded, so the item page shows real probabilities and
highlighted words. The test logs in, claims with the keyboard, changes a label, submits, and
reads the history; a screenshot of the item page is saved in tests/review/artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.review.store import ReviewStore
from serving.review.users import create_user
from tests.review.conftest import make_settings
from tests.servers import uvicorn_thread

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason="Debian's chromium is not installed (apt-get install -y chromium)",
    ),
]


@pytest.fixture()
def live(tmp_path, predictor) -> Iterator[tuple[str, ReviewStore]]:
    """API + review UI on 127.0.0.1 (random port), with a reviewer, an admin and queued items."""

    from serving.app import create_app
    from serving.contract.listing import Listing
    from serving.review.intake import IntakePolicy, enqueue_listings, flag_thresholds

    url = f"sqlite:///{tmp_path / 'review.db'}"
    store = ReviewStore.open(url)
    with store.transaction() as session:
        create_user(session, "rita", "reviewer", password="rita-password-1")
        create_user(session, "ada", "admin", password="ada-password-12")
    listings = [
        Listing(
            id="sku-thermal",
            title="LWIR thermal imaging core 640x512",
            description="uncooled VOx microbolometer, 12 um pitch, NETD < 40 mK",
            brand="Acme Optics",
        ),
        Listing(
            id="sku-<script>",
            title="<script>window.__xss = 1</script> FPV drone frame",
            description='<img src=x onerror="window.__xss=2"> 5 inch carbon',
        ),
    ]
    enqueue_listings(
        store,
        predictor.score(listings),
        IntakePolicy.EVERY,
        "browser-test",
        flag_thresholds=flag_thresholds(predictor.manifest),
        actor="test",
    )
    with uvicorn_thread(create_app(make_settings(url), predictor=predictor)) as base:
        yield base, store
    store.dispose()


def test_review_in_a_real_browser(live):
    from playwright.sync_api import expect, sync_playwright

    base, store = live
    ARTIFACTS.mkdir(exist_ok=True)
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.set_default_timeout(20_000)

        page.goto(f"{base}/review/queue")
        expect(page).to_have_url(f"{base}/review/login?next=%2Freview%2Fqueue")
        page.fill("#name", "rita")
        page.fill("#password", "not-her-password")
        page.click("#login")
        expect(page.locator("#login-error")).to_have_text("Wrong name or password.")
        page.fill("#name", "rita")
        page.fill("#password", "rita-password-1")
        page.click("#login")
        expect(page).to_have_url(f"{base}/review/queue")
        expect(page.locator("#who")).to_have_text("rita (reviewer)")
        expect(page.locator("#count-pending")).to_have_text("2")
        expect(page.locator("#queue tbody tr")).to_have_count(2)

        # The listing with markup in it shows as text, and nothing in it runs.
        expect(page.locator("#queue")).to_contain_text("<script>window.__xss = 1</script>")
        assert page.evaluate("window.__xss") is None

        # Claim the thermal core with the keyboard: filter by source, press "c".
        page.goto(f"{base}/review/queue?order=oldest")
        page.keyboard.press("c")
        page.wait_for_url(f"{base}/review/items/*")
        expect(page.locator("#item-title")).to_have_text("LWIR thermal imaging core 640x512")
        expect(page.locator("#item-status")).to_have_text("in review")
        expect(page.locator("#labels tbody tr")).to_have_count(9)
        expect(page.locator("#labels")).to_contain_text("6A003")  # control references
        expect(page.locator("#model-text mark.drove").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "item_page.png"), full_page=True)

        # Change the labels: clear all (x), tick sensors_lasers by its number key, add a note.
        page.keyboard.press("x")
        box = page.locator("#label-sensors_lasers")
        expect(box).not_to_be_checked()
        index = box.get_attribute("data-index")
        page.keyboard.press(index)
        expect(box).to_be_checked()
        page.keyboard.press("n")
        page.keyboard.type("VOx microbolometer core: 6A003 check <b>parameters</b>")
        page.keyboard.press("Escape")
        item_url = page.url.split("?")[0]
        page.keyboard.press("d")  # submit
        page.wait_for_url(lambda url: url != item_url and "/review/" in url)

        # After submitting, the next item (the one with markup) was claimed for rita.
        expect(page.locator("#item-title")).to_contain_text("<script>window.__xss = 1</script>")
        expect(page.locator("#item-description")).to_contain_text("<img src=x onerror=")
        assert page.evaluate("window.__xss") is None
        page.keyboard.press("s")  # skip it
        page.wait_for_url(f"{base}/review/queue*")
        expect(page.locator("#flash")).to_be_visible()

        # History of the decided item, from the audit log.
        page.goto(f"{item_url}/history")
        expect(page.locator("#history-status")).to_have_text("decided")
        actions = page.locator("#history td.action").all_inner_texts()
        assert actions == ["item.enqueue", "claim", "review.submit"]
        submit_row = page.locator('#history tr[data-action="review.submit"]')
        expect(submit_row).to_contain_text("rita")
        expect(submit_row).to_contain_text("sensors_lasers")
        expect(submit_row).to_contain_text("<b>parameters</b>")

        # A reviewer cannot reach the admin page; an admin can.
        response = page.goto(f"{base}/review/admin")
        assert response is not None and response.status == 403
        page.click("#logout")
        expect(page).to_have_url(f"{base}/review/login?msg=logged_out")
        page.goto(f"{base}/review/admin")
        page.fill("#name", "ada")
        page.fill("#password", "ada-password-12")
        page.click("#login")
        expect(page).to_have_url(f"{base}/review/admin")
        expect(page.locator("#throughput")).to_contain_text("rita")
        browser.close()
    assert dialogs == []
    with store.session() as session:
        from serving.review.queue import count_by_status

        assert count_by_status(session)["decided"] == 1
