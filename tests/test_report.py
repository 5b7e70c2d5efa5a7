"""evaluate's report.html and mistakes.png, and the page renderer under them (report/html.py): one self-contained
page that escapes every name from the user's data, checked in a real headless browser."""

from __future__ import annotations

import base64
import csv
from html.parser import HTMLParser
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from imgclass_cli.report import evalpage, html, overlays

# Class names (folder names: no '/'): markup, an attribute breaking out, quotes and entities, mathtext.
HOSTILE = ["<script>alert(1)", "<img src=x onerror=alert(2)>", 'a&amp;b "c" \'d\' $\\frac{x}$']
# What a self-contained page must not hold (no network: nothing is fetched; the test asserts their absence).
EXTERNAL = ("http://", "https://", "//", "url(", "@import", "<script", "<link", "<iframe", "<object", "srcset")  # no network


def a_png(colour=(200, 30, 30)) -> bytes:
    return overlays.png(np.full((6, 8, 3), colour, np.uint8))


class Dom(HTMLParser):
    """What a page holds: its <img> sources, the cards and their images, its text."""

    def __init__(self):
        super().__init__()
        self.images, self.cards, self.text, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
            if self.cards:
                self.cards[-1] += 1
        if tag == "div" and attrs.get("class") == "card":
            self.cards.append(0)

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Dom:
    dom = Dom()
    dom.feed(page)
    return dom


def png_of(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))
    im.load()
    return im


def test_the_renderer_escapes_every_text_and_embeds_only_pngs():
    name = HOSTILE[0]
    page = html.render(html.Page(f"run on {name}", [
        html.Section(name, [html.Paragraph(name), html.Table([name], [[name], [html.Link(name, "x-1")], [0.5], [3]]),
                            html.Gallery([html.Card([html.Image(a_png(), name)], [name, "new\nline\x1b[31m"],
                                                    anchor="x-1")])], anchor="s-1")], subtitle=[name]))
    dom = parse(page)
    assert "<script" not in page and dom.tags.count("script") == 0
    assert "".join(dom.text).count(name) == 10  # title, h1, subtitle, nav, h2, paragraph, header, cell, link, card
    assert "new\\nline\\x1b[31m" in page  # a control character shows as an escape, never acts
    assert f'content="{html.CSP}"' in page and len(dom.images) == 1 and png_of(dom.images[0]).size == (8, 6)
    with pytest.raises(ValueError, match="PNG"):
        html.render(html.Page("t", [html.Section("s", [html.Image(b"GIF89a...", "x")])]))
    with pytest.raises(ValueError, match="anchor"):
        html.render(html.Page("t", [html.Section("s", [], anchor='x" onload="y')]))


def _metrics(names, **extra) -> dict:
    n = len(names)
    return {"class_names": names, "num_samples": 30, "accuracy": 0.8, "f1_macro": 0.75, "split": "test",
            "per_class": {c: {"precision": 0.8, "recall": 0.7, "f1": 0.75, "support": 10} for c in names},
            "confusion_matrix": [[8 if i == j else 1 for j in range(n)] for i in range(n)], **extra}


def test_calibration_and_risk_coverage_sections_appear_only_with_their_keys():
    names = ["cat", "dog"]
    plain = evalpage.page(_metrics(names), "t")
    assert 'id="calibration"' not in plain and 'id="risk-coverage"' not in plain
    rich = evalpage.page(_metrics(names, ece=0.031, ece_uncalibrated=0.12, nll=0.4, brier=0.2,
                                  calibration={"temperature": 1.7},
                                  risk_coverage=[{"threshold": 0.5, "coverage": 0.9, "accuracy": 0.95, "images": 27},
                                                 {"threshold": "bad"}],
                                  target={"accuracy": 0.95, "threshold": 0.5}), "t", reliability_png=a_png())
    dom = parse(rich)
    text = "".join(dom.text)
    assert 'id="calibration"' in rich and "calibration.temperature" in text and "1.7000" in text
    assert "ece_uncalibrated" in text and "0.1200" in text and len(dom.images) == 1  # the reliability diagram
    assert "0.9500" in text and ">27<" in rich and "bad" not in text  # the malformed row is left out
    off = evalpage.page(_metrics(names), "t", gallery=evalpage.Gallery(requested=0))
    assert "no gallery (--gallery 0)" in off


def test_the_gallery_takes_the_most_confident_mistakes_and_some_of_every_class():
    from imgclass_cli.run.evalreport import choose

    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    p = np.array([[0.1, 0.9, 0], [0.2, 0.7, 0.1], [0.4, 0.6, 0], [0.9, 0.1, 0], [0, 1, 0],
                  [0.6, 0.4, 0], [0, 0, 1], [0.5, 0.45, 0.05]])  # wrong: 0, 1, 2 (class 0), 3 (1), 5, 7 (2)
    overall, by_class = choose(y, p, 4)
    assert overall == [0, 3, 1, 2]  # confidences 0.9, 0.9, 0.7, 0.6: ties keep the evaluation's order
    assert by_class == {0: [0], 2: [5], 1: [3]}  # max(1, 4 // 3) = 1 each, the classes with most mistakes first
    assert choose(y, p, 0) == ([], {})
    assert sum(map(len, choose(y, p, 2)[1].values())) == 2  # up to N in all


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def browse(page: str, tmp, screenshot: str) -> tuple[str, dict]:
    """(the DOM Chromium built from the page, its network log), with the page opened from disk."""
    netlog = os.path.join(tmp, "netlog.json")
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={os.path.join(tmp, 'profile')}",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}", "--window-size=1200,1600",
         f"--screenshot={screenshot}", "--dump-dom", "file://" + os.path.abspath(page)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, json.load(open(netlog))


def page_requests(netlog: dict) -> list[str]:
    """URLs the page asked for (the browser's own background requests have no origin as initiator)."""
    names = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
    starts = [e.get("params", {}) for e in netlog["events"] if names.get(e["type"]) == "URL_REQUEST_START_JOB"]
    return [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]


@pytest.mark.slow
def test_evaluate_writes_a_self_contained_report_that_a_browser_shows_whole(runner, trained_run, test_dir, tmp_path):
    """A run whose classes are hostile names: evaluate's report.html in headless Chromium shows every class and
    every gallery image (each beside its heatmap), runs nothing and loads nothing; mistakes.png beside it."""
    from imgclass_cli.cli import app

    if chromium() is None:
        pytest.skip("no Chromium to render report.html in: `apt-get install -y chromium` (.ci/run installs it)")
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(trained_run, run)
    json.dump(HOSTILE, open(run / "labels.json", "w"))  # the same model, its classes renamed
    for name, src in zip(HOSTILE, ("blue", "green", "red")):
        shutil.copytree(os.path.join(test_dir, src), data / name)
    shutil.copy(data / HOSTILE[2] / "img001.png", data / HOSTILE[0] / "<b onmouseover=alert(3)>.png")
    r = runner.invoke(app, ["evaluate", str(run), str(data), "--gallery", "4", "-q"])
    assert r.exit_code == 0, r.output
    page = (run / "report.html").read_text(encoding="utf-8")
    bare = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page.replace(html.CSP, ""))
    assert not [x for x in EXTERNAL if x in bare]
    mistakes = list(csv.DictReader(open(run / "misclassified.csv", encoding="utf-8")))
    assert mistakes, "the renamed run must make mistakes for the gallery to show"
    dom_text, netlog = browse(str(run / "report.html"), str(tmp_path), str(tmp_path / "shot.png"))
    dom = parse(dom_text)
    assert dom.tags.count("script") == 0 and page_requests(netlog) == []
    text = "".join(dom.text)
    for name in HOSTILE:
        assert text.count(f"true: {name}") + text.count(f"predicted: {name}") >= (name in {m["true"] for m in mistakes})
        assert name in text  # every class: its row in the per-class table
    assert "<b onmouseover=alert(3)>.png" in text or all("onmouseover" not in m["path"] for m in mistakes)
    assert "b" not in dom.tags
    overall = min(4, len(mistakes))
    assert len(dom.cards) >= overall and all(n == 2 for n in dom.cards)  # each image beside its heatmap overlay
    assert len(dom.images) == 2 + 2 * len(dom.cards)  # and the confusion matrix and the reliability diagram
    assert all(png_of(src).size[0] > 0 for src in dom.images)
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert (shot < 200).mean() > 0.02  # the page drew something (text, figures), not a blank
    grid = Image.open(run / "mistakes.png")
    assert grid.format == "PNG" and grid.size[0] >= overall * 100
