"""The concept browser, tested as a person sees it: headless Chromium opens the generated site
from disk (no server), a test types into its search box and opens a concept; screenshots of the
overview and of a concept page are written to target/screenshots/."""
import json
import os
import re
import shutil
import struct
import subprocess
import time
import urllib.request
import zlib

import numpy as np
import pytest

from conftest import DATA, REPO

SHOTS = REPO / "target" / "screenshots"


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert exe, "Chromium is needed for the browser tests (.ci/run installs Debian's chromium)"
    return exe


class Browser:
    """A headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, tmp):
        import websocket

        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={tmp}/profile", "--window-size=1400,1100", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + 30
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"ws://127.0.0.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        assert port, "Chromium did not start"
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.errors = []
        self.call("Runtime.enable")
        self.call("Log.enable")
        self.call("Page.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.exceptionThrown":
                self.errors.append(msg["params"]["exceptionDetails"].get("text", "exception"))
            elif msg.get("method") == "Runtime.consoleAPICalled" and msg["params"]["type"] == "error":
                self.errors.append(str(msg["params"]["args"]))
            elif msg.get("method") == "Log.entryAdded" and msg["params"]["entry"]["level"] == "error":
                self.errors.append(msg["params"]["entry"]["text"])
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def open(self, url):
        self.call("Page.navigate", url=url)
        for _ in range(100):
            if self.js("document.readyState") == "complete":
                break
            time.sleep(0.05)
        time.sleep(0.2)
        self.call("Runtime.evaluate", expression="1")  # drain pending events

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")

    def type_into(self, selector, text):
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        for ch in text:
            self.call("Input.insertText", text=ch)

    def screenshot(self, path):
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


def run(cli, *args):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True)


def png(path, w, h, seed):
    """A small generated RGB image (stdlib only)."""
    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 255, (h, w, 3))).astype(np.uint8)
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_demo_site_in_a_real_browser(tmp_path, cli, browser):
    run_dir = tmp_path / "demo"
    r = run(cli, "train", "--concepts", "256", "-k", "8", "--epochs", "3", "--lr", "5e-3", "--out", run_dir, "--progress", "quiet")
    assert r.returncode == 0, r.stderr
    site = tmp_path / "site"
    r = run(cli, "concepts", "--model", run_dir, "--out", site)
    assert r.returncode == 0, r.stderr
    browser.open((site / "index.html").as_uri())
    assert browser.errors == []
    assert browser.js("document.querySelectorAll('#concepts tbody tr').length") == 256
    assert browser.js("document.querySelectorAll('svg.chart').length") >= 6
    browser.screenshot(SHOTS / "concepts-overview.png")
    # Typing a token filters the table to the concepts that fire on it.
    browser.type_into("#search", "god")
    shown = browser.js("[...document.querySelectorAll('#concepts tbody tr')].map(r => +r.dataset.concept)")
    index = json.loads(re.search(r"const TOKENS = (.*);", (site / "data.js").read_text()).group(1))
    firing = {c for tok, hits in index if tok.strip().lower() == "god" for c, _ in hits}
    assert shown and set(shown) == firing, (shown, firing)
    assert "fire on" in browser.js("document.getElementById('results').textContent")
    browser.screenshot(SHOTS / "concepts-search.png")
    # Opening a concept shows its top examples with the highlighted token.
    first = shown[0]
    browser.js(f"document.querySelector('tr[data-concept=\"{first}\"] a').click()")
    for _ in range(100):  # the page loads the concept's shard
        if browser.js("document.querySelectorAll('#top .ex').length"):
            break
        time.sleep(0.05)
    assert browser.js("location.pathname").endswith("/concept.html") and browser.js("location.hash") == f"#{first}"
    assert browser.js("document.querySelectorAll('#top .ex').length") >= 1
    # Every example has its token highlighted, shaded by the concept's (positive) value.
    examples = browser.js("document.querySelectorAll('#top .ex').length")
    hits = browser.js("[...document.querySelectorAll('#top .ex .hit')].map(e => e.className + ' ' + e.title)")
    assert len(hits) == examples and all("pos" in h for h in hits), hits
    assert browser.js("document.querySelectorAll('svg.chart').length") == 2
    browser.screenshot(SHOTS / "concepts-concept.png")
    # A link to another concept opens it in the same page.
    other = browser.js("document.querySelector('#nearest a').getAttribute('href')")
    browser.js("document.querySelector('#nearest a').click()")
    for _ in range(100):
        if browser.js("location.hash") == other.split("concept.html")[1] and \
                browser.js("document.querySelector('h1').textContent").startswith("Concept " + other.split("concept.html")[1]):
            break
        time.sleep(0.05)
    assert browser.js("document.querySelector('h1').textContent").startswith("Concept " + other.split("concept.html")[1])
    assert browser.errors == []


def test_real_text_and_image_data(tmp_path, cli, browser):
    # SmolLM2 (byte-level BPE tokens) and DINOv2 patches with generated images for the crops.
    for name, d in [("smollm2_l15_public", 576), ("dinov2s_l6_public", 384)]:
        data = DATA / f"{name}.npy"
        run_dir = tmp_path / name
        r = run(cli, "train", "--data", data, "--concepts", "128", "-k", "4", "--steps", "8", "--batch-size", "1024",
                "--out", run_dir, "--progress", "quiet")
        assert r.returncode == 0, r.stderr
        site = tmp_path / f"site-{name}"
        extra = []
        if name.startswith("dinov2"):
            images = tmp_path / "images"
            lines = (DATA / f"{name}.tokens.tsv").read_text().splitlines()[1:]
            for img in sorted({l.split("\t")[2] for l in lines}):
                png(images / img, 64, 64, hash(img) % 1000)
            extra = ["--images", images]
        r = run(cli, "concepts", "--model", run_dir, "--data", data, "--tokens", DATA / f"{name}.tokens.tsv",
                "--out", site, *extra)
        assert r.returncode == 0, r.stderr
        browser.open((site / "index.html").as_uri())
        assert browser.js("document.querySelectorAll('#concepts tbody tr').length") == 128
        top = browser.js("document.querySelector('#concepts tbody tr').dataset.concept")
        browser.open((site / "concept.html").as_uri() + f"#{top}")
        if name.startswith("dinov2"):
            assert browser.js("document.querySelectorAll('#top .img svg').length") >= 1
            assert browser.js("document.querySelectorAll('#top .crop img').length") >= 1
            assert browser.js("[...document.querySelectorAll('#top .crop img')].every(i => i.naturalWidth == 64)")
            browser.screenshot(SHOTS / "concepts-image.png")
        else:
            assert browser.js("document.querySelectorAll('#top .hit').length") >= 1
            # Decoded text, not byte-level BPE pieces; every atom link carries a label.
            text = browser.js("document.body.innerText")
            assert "Ġ" not in text and "Ċ" not in text, text[:500]
            links = browser.js("[...document.querySelectorAll('#nearest a')].map(a => a.textContent)")
            assert links and all(len(l.split(" ", 1)) == 2 and l.split(" ", 1)[1].strip() for l in links), links
            browser.screenshot(SHOTS / "concepts-text.png")
        assert browser.errors == []


def test_bad_inputs_are_one_line(tmp_path, cli):
    run_dir = tmp_path / "r"
    assert run(cli, "train", "--concepts", "64", "-k", "2", "--steps", "2", "--out", run_dir, "--progress", "quiet").returncode == 0
    short = tmp_path / "short.tsv"
    lines = (REPO / "data" / "minilm_l3_demo.tokens.tsv").read_text().splitlines()
    short.write_text("\n".join(lines[:100]) + "\n")
    demo = REPO / "data" / "minilm_l3_demo.npy"
    r = run(cli, "concepts", "--model", run_dir, "--data", demo, "--tokens", short, "--out", tmp_path / "s")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "99 rows but the data has 4096" in r.stderr
    r = run(cli, "concepts", "--model", run_dir, "--data", DATA / "smollm2_l15_public.npy", "--out", tmp_path / "s")
    assert r.returncode == 1 and "dimension 576" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # A model file alone (no metrics.jsonl beside it): the overview says it has no curves.
    site = tmp_path / "nocurves"
    r = run(cli, "concepts", "--model", run_dir / "model.safetensors", "--out", site)
    assert r.returncode == 0 and "no training curves" in r.stderr
    assert 'id="no-curves"' in (site / "index.html").read_text()
