"""The review page in a real headless browser (Debian's chromium and chromedriver, driven
by selenium): it renders the top clips as cards with their keyframes, a click on "take
predicted", a keyboard shortcut and the export give the expected CSV, and that CSV
applied gives the corrected manifest."""
from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from emodist.audit import synthetic
from emodist.audit.apply import apply_decisions
from emodist.audit.report import audit
from emodist.config import Config
from emodist.labels import DFEW
from emodist.synth import synthesize

# the browser (chromium, installed by scripts/test.sh --all): the slow tier
pytestmark = pytest.mark.slow

N = 3


@pytest.fixture
def reviewed(tmp_path):
    clips = tmp_path / "clips"
    synthesize(clips, N, seed=0, size=96, min_s=2.0, max_s=2.5)
    case = synthetic.make_case(N, DFEW, seed=5, noise=0.0)
    case.ids[:] = [f"clip_{i:05d}" for i in range(N)]
    synthetic.write_predictions(tmp_path / "out", case, DFEW, clip_dir=str(clips))
    synthetic.write_manifest(tmp_path / "man.csv", case, DFEW, clip_dir=str(clips))
    s = audit(str(tmp_path / "out"), str(tmp_path / "man.csv"), tmp_path / "rep", Config(), top=N)
    return tmp_path, case, s


def _browser(download_dir: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are needed: apt-get install -y chromium chromium-driver "
                    "(scripts/test.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def _wait_for(path: Path, timeout_s: float = 10.0) -> str:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not downloaded")


def test_page_renders_cards_and_exports_decisions(reviewed):
    tmp_path, case, s = reviewed
    from selenium.webdriver.common.by import By

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(downloads)
    try:
        driver.get((tmp_path / "rep" / "index.html").as_uri())
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == N
        for card in cards:  # every keyframe strip decoded and shown
            imgs = card.find_elements(By.CSS_SELECTOR, ".strip img")
            assert len(imgs) == 3
            for img in imgs:
                driver.execute_script("arguments[0].scrollIntoView()", img)
                assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        driver.save_screenshot(str(tmp_path / "rep" / "screenshot.png"))
        first, second = (c.get_attribute("data-clip-id") for c in cards[:2])
        cards[0].find_element(By.CSS_SELECTOR, "button.take").click()
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("j")  # to the next card, then 'o': keep its original label
        body.send_keys("o")
        driver.find_element(By.ID, "export").click()
        text = _wait_for(downloads / "decisions.csv")
        # the filters hide the cards of other classes
        original = cards[0].get_attribute("data-original")
        driver.execute_script("const s = document.getElementById('filter-original');"
                              "s.value = arguments[0]; s.dispatchEvent(new Event('change'));", original)
        shown = [c for c in cards if c.is_displayed()]
        assert shown and all(c.get_attribute("data-original") == original for c in shown)
    finally:
        driver.quit()
    rows = list(csv.DictReader(text.splitlines()))
    by_id = {f"clip_{i:05d}": i for i in range(N)}
    pred = case.probs.argmax(axis=1)
    assert rows == [
        {"clip_id": first, "uri": str(tmp_path / "clips" / f"{first}.mp4"), "original": DFEW[case.original[by_id[first]]],
         "decision": "predicted", "decided_label": DFEW[pred[by_id[first]]]},
        {"clip_id": second, "uri": str(tmp_path / "clips" / f"{second}.mp4"),
         "original": DFEW[case.original[by_id[second]]], "decision": "keep",
         "decided_label": DFEW[case.original[by_id[second]]]},
    ]
    (tmp_path / "decisions.csv").write_text(text)
    applied = apply_decisions(str(tmp_path / "decisions.csv"), str(tmp_path / "man.csv"),
                              str(tmp_path / "new.csv"), Config(), DFEW)
    new = {r["clip_id"]: r for r in csv.DictReader((tmp_path / "new.csv").open())}
    assert applied.reviewed == 2 and len(new) == N
    assert new[first]["label"] == DFEW[pred[by_id[first]]] and new[first]["label_source"] == "review:predicted"
    assert new[first]["original_label"] == DFEW[case.original[by_id[first]]]
    assert new[second]["label_source"] == "review:keep"
    third = next(c for c in new if c not in (first, second))
    assert new[third]["label_source"] == "manifest" and new[third]["label"] == DFEW[case.original[by_id[third]]]
    assert np.all([r["uri"] for r in new.values()])


def test_page_data_cannot_end_its_script_element(tmp_path):
    from emodist.audit.page import write_page

    card = {"rank": 1, "clip_id": "a</script><script>alert(1)</script>", "uri": "a.mp4", "original": "happy",
            "predicted": "sad", "score": 0.1, "issue": True, "dist": [], "descriptions": ["</script>"],
            "spans": [[0, 1]], "frames": [], "frames_note": None, "other": None}
    html = write_page(tmp_path, [card], list(DFEW), {"title": "<b>t</b>"}).read_text()
    assert html.count("</script>") == 2  # the data block's and the code's own
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in html
