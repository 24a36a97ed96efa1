"""The live workbench: ``python -m mpsae serve RUN --model ... --hook ...`` serves, on
``127.0.0.1`` by default, a page where a researcher types text and sees each token's concepts
(:func:`mpsae.probe`; a click on a concept opens its page of the run's concept browser when the
run has one, ``RUN/concepts``), and steers the model with a concept and a coefficient, reading
the generated text beside the unsteered one (:func:`mpsae.generate_steered`).

Standard library only (``http.server``); one request at a time reaches the model.
"""
from __future__ import annotations

import json
import os
import posixpath
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional

from .workbench import generate_steered, probe

__all__ = ["Workbench", "serve"]

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mpsae workbench: __TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#1f2937;color:#f9fafb;padding:12px 24px}h1{font-size:20px;margin:0}
header .stats{color:#d1d5db}main{padding:16px 24px;display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:24px}
h2{font-size:16px;margin:8px 0}textarea,input{font-size:14px;padding:6px 8px;border:1px solid #d1d5db;border-radius:4px}
textarea{width:100%;height:80px;box-sizing:border-box}button{font-size:14px;padding:6px 14px;margin:6px 0;cursor:pointer}
#tokens{line-height:2.2;background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px;min-height:40px}
.tok{padding:2px 3px;border-radius:3px;cursor:pointer;font-family:ui-monospace,monospace;white-space:pre}
.tok.sel{outline:2px solid #111827}#picks{margin-top:8px;background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px}
#picks a{margin-right:12px}.note{color:#6b7280;font-style:italic}.out{white-space:pre-wrap;overflow-wrap:anywhere;background:#fff;
border:1px solid #e5e7eb;border-radius:6px;padding:8px;min-height:40px;font-family:ui-monospace,monospace}
label{display:inline-block;margin-right:10px}
</style></head>
<body><header><h1>mpsae workbench: __TITLE__</h1><div class="stats">__STATS__</div></header>
<main>
<section><h2>Probe</h2>
<textarea id="text" placeholder="type a sentence"></textarea><br>
<button id="probe">Probe</button> <span id="status" class="note"></span>
<div id="tokens"></div>
<div id="picks"><span class="note">click a token to see its concepts</span></div>
</section>
<section><h2>Steer</h2>
<label>concept <input id="concept" size="7"></label>
<label>coefficient <input id="coef" size="7" value="10"></label>
<label>mode <select id="mode"><option>add</option><option>clamp</option></select></label><br>
<textarea id="prompt" placeholder="a prompt to continue"></textarea><br>
<button id="steer">Generate</button> <span id="steer-status" class="note"></span>
<h2>Unsteered</h2><div class="out" id="unsteered"></div>
<h2>Steered</h2><div class="out" id="steered"></div>
</section>
</main>
<script>
const SITE = __SITE__;
async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
function visible(t) { return t.replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5'); }
function showPicks(row) {
  const picks = document.getElementById('picks');
  picks.innerHTML = '';
  const head = document.createElement('div');
  head.textContent = 'token ' + JSON.stringify(row.token) + ':';
  picks.appendChild(head);
  for (const c of row.concepts) {
    const a = document.createElement('a');
    a.className = 'concept';
    a.dataset.concept = c.concept;
    a.textContent = '#' + c.concept + ' ' + (c.value >= 0 ? '+' : '') + c.value.toFixed(3) + ' (step ' + c.step + ')';
    if (SITE) a.href = '/site/concept.html#' + c.concept;
    a.addEventListener('click', () => { document.getElementById('concept').value = c.concept; });
    picks.appendChild(a);
  }
}
document.getElementById('probe').addEventListener('click', async () => {
  const status = document.getElementById('status');
  status.textContent = 'probing...';
  try {
    const rows = await post('/api/probe', {text: document.getElementById('text').value});
    const box = document.getElementById('tokens');
    box.innerHTML = '';
    const top = Math.max(1e-9, ...rows.map(r => r.concepts.length ? Math.abs(r.concepts[0].value) : 0));
    rows.forEach((r, i) => {
      const s = document.createElement('span');
      s.className = 'tok';
      s.dataset.position = r.position;
      s.textContent = visible(r.token);
      const v = r.concepts.length ? r.concepts[0].value : 0;
      s.style.background = (v >= 0 ? 'rgba(37,99,235,' : 'rgba(220,38,38,') + (0.8 * Math.abs(v) / top).toFixed(2) + ')';
      s.title = r.concepts.map(c => '#' + c.concept + ' ' + c.value.toFixed(3)).join(', ');
      s.addEventListener('click', () => {
        box.querySelectorAll('.tok').forEach(t => t.classList.remove('sel'));
        s.classList.add('sel');
        showPicks(r);
      });
      box.appendChild(s);
    });
    status.textContent = rows.length + (rows.length === 1 ? ' token' : ' tokens');
  } catch (e) { status.textContent = 'error: ' + e.message; }
});
document.getElementById('steer').addEventListener('click', async () => {
  const status = document.getElementById('steer-status');
  status.textContent = 'generating...';
  try {
    const concepts = {};
    concepts[document.getElementById('concept').value] = parseFloat(document.getElementById('coef').value);
    const r = await post('/api/steer', {prompt: document.getElementById('prompt').value, concepts,
                                          mode: document.getElementById('mode').value});
    document.getElementById('unsteered').textContent = r.prompt + r.unsteered;
    document.getElementById('steered').textContent = r.prompt + r.steered;
    status.textContent = 'done';
  } catch (e) { status.textContent = 'error: ' + e.message; }
});
</script></body></html>
"""


class Workbench:
    """What the server answers: the run's SAE, the model, its tokenizer and the hook.

    Parameters
    ----------
    run : path
        A run folder (or model file / SAELens folder); its ``concepts`` folder, when present, is
        served under ``/site/`` so that each concept links to its page.
    model, tokenizer
        The model the SAE was trained on and its tokenizer.
    hook : str
        The module path the SAE reads.
    site : path or None
        A concept browser to serve instead of ``RUN/concepts``.
    """

    def __init__(self, run, model, tokenizer, hook: str, site: Optional[os.PathLike] = None,
                 max_new_tokens: int = 24):
        from .splice import load_sae

        self.run = os.fspath(run)
        self.sae = load_sae(run, next(model.parameters()).device)
        self.model, self.tokenizer, self.hook = model, tokenizer, hook
        candidate = os.fspath(site) if site is not None else os.path.join(self.run, "concepts")
        self.site = candidate if os.path.isfile(os.path.join(candidate, "index.html")) else None
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()

    def page(self) -> str:
        name = os.path.basename(self.run.rstrip("/"))
        stats = (f"{self.sae.nb_concepts} concepts · k = {self.sae.k} · hook {self.hook}"
                 + ("" if self.site else " · no concept browser in this run (mpsae concepts writes one)"))
        esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")  # noqa: E731
        return (PAGE.replace("__TITLE__", esc(name)).replace("__STATS__", esc(stats))
                .replace("__SITE__", "true" if self.site else "false"))

    def probe(self, body: Dict[str, Any]):
        text = str(body.get("text", ""))
        if not text.strip():
            raise ValueError("type some text to probe")
        with self.lock:
            return probe(self.model, self.sae, text, self.hook, tokenizer=self.tokenizer,
                         top=int(body.get("top", 5)))

    def steer(self, body: Dict[str, Any]):
        prompt = str(body.get("prompt", ""))
        if not prompt.strip():
            raise ValueError("give a prompt to continue")
        try:
            concepts = {int(k): float(v) for k, v in dict(body.get("concepts", {})).items()}
        except (TypeError, ValueError):
            raise ValueError("concepts must map concept numbers to coefficients") from None
        if not concepts:
            raise ValueError("give a concept and a coefficient")
        with self.lock:
            return generate_steered(self.model, self.sae, self.hook, concepts, prompt, tokenizer=self.tokenizer,
                                    mode=str(body.get("mode", "add")),
                                    max_new_tokens=int(body.get("max_new_tokens", self.max_new_tokens)))


def _handler(bench: Workbench):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: one line a request is noise in a terminal
            pass

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, value) -> None:
            self._send(code, json.dumps(value).encode(), "application/json")

        def do_GET(self):
            path = urllib.parse.urlparse(self.path).path
            if path in ("/", "/index.html"):
                return self._send(200, bench.page().encode(), "text/html; charset=utf-8")
            if path == "/favicon.ico":
                self.send_response(204)
                self.end_headers()
                return None
            if path.startswith("/site/") and bench.site:
                rel = posixpath.normpath(urllib.parse.unquote(path[len("/site/"):]))
                if rel.startswith("..") or rel.startswith("/"):
                    return self._send(404, b"not found", "text/plain")
                file = os.path.join(bench.site, *rel.split("/"))
                if os.path.isfile(file):
                    kind = {".html": "text/html; charset=utf-8", ".css": "text/css", ".js": "text/javascript",
                            ".png": "image/png", ".svg": "image/svg+xml"}.get(os.path.splitext(file)[1],
                                                                              "application/octet-stream")
                    with open(file, "rb") as f:
                        return self._send(200, f.read(), kind)
            return self._send(404, b"not found", "text/plain")

        def do_POST(self):
            path = urllib.parse.urlparse(self.path).path
            length = int(self.headers.get("Content-Length", "0") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._json(400, {"error": "the request is not JSON"})
            try:
                if path == "/api/probe":
                    return self._json(200, bench.probe(body))
                if path == "/api/steer":
                    return self._json(200, bench.steer(body))
            except (ValueError, TypeError) as e:
                return self._json(400, {"error": str(e)})
            return self._json(404, {"error": f"no such endpoint {path}"})

    return Handler


def serve(bench: Workbench, host: str = "127.0.0.1", port: int = 0, ready=print) -> None:
    """Serves ``bench`` until interrupted; ``ready`` gets the URL once the socket listens (port 0:
    a free port chosen by the system)."""
    server = ThreadingHTTPServer((host, port), _handler(bench))
    try:
        ready(f"serving the workbench on http://{host}:{server.server_address[1]}/")
        server.serve_forever()
    finally:
        server.server_close()
