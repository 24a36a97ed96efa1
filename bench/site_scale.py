"""The concept browser at scale: a synthetic model of 65,536 concepts (d = 64, k = 8, random
dictionary) on 50,000 synthetic rows with a token table, `mpsae concepts` timed, the site's file
count and size, and the index and a concept page opened in headless Chromium (load time from
navigation start to the table's or the page's content).

    python bench/site_scale.py [--concepts 65536] [--rows 50000] [--d 64] [--k 8]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", type=int, default=65536)
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--cli", default=str(REPO / "target" / "release" / "mpsae"))
    a = ap.parse_args()
    import mpsae

    tmp = pathlib.Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    model = mpsae.MpSAE(a.d, a.concepts, k=a.k, seed=0)
    model.save(tmp / "model.safetensors")
    x = rng.standard_normal((a.rows, a.d)).astype(np.float32)
    np.save(tmp / "rows.npy", x)
    words = ["the", " cat", " sat", " on", " mat", ".", "\n", " model", " layer", " token", " concept", " of"]
    with open(tmp / "rows.tokens.tsv", "w") as f:
        f.write("row\tsource\tdoc\twindow\tpos\ttoken_id\ttoken\ttext\n")
        for i in range(a.rows):
            w = words[rng.integers(len(words))]
            e = w.replace(chr(10), chr(92) + "n")
            f.write(f"{i}\tsynthetic\t{i // 256}\t0\t{i % 256}\t{i % 97}\t{e}\t{e}\n")
    site = tmp / "site"
    t = time.perf_counter()
    subprocess.run([a.cli, "concepts", "--model", str(tmp / "model.safetensors"), "--data", str(tmp / "rows.npy"),
                    "--tokens", str(tmp / "rows.tokens.tsv"), "--out", str(site)], check=True, capture_output=True,
                   env=dict(os.environ, MPSAE_TIMING="1"))
    build = time.perf_counter() - t
    files = [p for p in site.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    from test_concepts import Browser

    b = Browser(tmp)
    try:
        b.open((site / "index.html").as_uri())
        # From navigation start to the end of the load event (data.js parsed, the table rendered).
        index_ms = b.js("performance.getEntriesByType('navigation')[0].loadEventEnd")
        rows_shown = b.js("document.querySelectorAll('#concepts tbody tr').length")
        top = b.js("document.querySelector('#concepts tbody tr').dataset.concept")
        t = time.perf_counter()
        b.open((site / "concept.html").as_uri() + f"#{top}")
        for _ in range(200):
            if b.js("document.querySelectorAll('#top .ex').length"):
                break
            time.sleep(0.02)
        concept_s = time.perf_counter() - t
        examples = b.js("document.querySelectorAll('#top .ex').length")
        errors = b.errors
    finally:
        b.close()
    out = {"concepts": a.concepts, "rows": a.rows, "d": a.d, "k": a.k, "build_s": round(build, 1),
           "files": len(files), "size_mb": round(size / 1e6, 1), "index_loaded_ms": round(index_ms),
           "index_rows_shown": rows_shown, "concept_page_s": round(concept_s, 2), "examples": examples,
           "errors": errors}
    print(json.dumps(out))
    return 0 if not errors and examples else 1


if __name__ == "__main__":
    sys.exit(main())
