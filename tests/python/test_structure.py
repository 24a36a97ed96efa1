"""The project's structure rules, checked: no import circle, each training option defined once
(the library's table, read by the CLI's flags, the Python signatures and ``mpsae.defaults()``),
one writer of ``metrics.jsonl``, type stubs that match the extension."""
import ast
import inspect
import re
import subprocess
import sys

import numpy as np
import pytest

import mpsae
from mpsae import _mpsae

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "structure"))
import imports  # noqa: E402


def test_no_import_circle_in_the_workspace():
    assert imports.all_circles(str(REPO)) == []


def test_the_circle_finder_finds_a_circle(tmp_path):
    src = tmp_path / "crates" / "x" / "src"
    src.mkdir(parents=True)
    (src / "lib.rs").write_text("mod a;\nmod b;\n")
    (src / "a.rs").write_text("use crate::b::B;\npub struct A;\n")
    (src / "b.rs").write_text("pub struct B;\nfn f() { let _ = crate::a::A; }\n")
    pkg = tmp_path / "python" / "mpsae"
    pkg.mkdir(parents=True)
    (pkg / "p.py").write_text("from .q import g\n")
    (pkg / "q.py").write_text("from . import p\n")
    found = imports.all_circles(str(tmp_path))
    assert sorted(map(sorted, found)) == [["crates/x/src/a.rs", "crates/x/src/b.rs"],
                                          ["python/mpsae/p.py", "python/mpsae/q.py"]]


def _cli_flags(cli):
    """``{flag: default or None}`` of ``mpsae train --help``."""
    text = subprocess.run([cli, "train", "--help"], check=True, capture_output=True, text=True).stdout
    flags = {}
    for block in re.split(r"\n(?=\s+(?:-\w, )?--)", text):
        m = re.match(r"\s+(?:-\w, )?--([\w-]+)", block)
        if m:
            d = re.search(r"\[default: ([^\]]+)\]", block)
            flags[m.group(1)] = d.group(1) if d else None
    return flags


def test_each_option_is_defined_once_in_the_library(cli):
    table = mpsae.options()
    names = [row["name"] for row in table]
    assert len(names) == len(set(names))
    # The CLI's flags are the table's rows, with its defaults.
    flags = _cli_flags(cli)
    for row in table:
        flag = row["flag"][2:]
        assert flag == (row["name"].replace("_", "-") if not (row["kind"] == "switch" and row["default"] is True)
                        else "no-" + row["name"].replace("_", "-"))
        assert flag in flags, f"--{flag} missing from mpsae train --help"
        if row["kind"] != "switch" and row["default"] is not None:
            assert float(flags[flag]) == float(row["default"]) if isinstance(row["default"], (int, float)) \
                else flags[flag] == row["default"], row["name"]
    # Python's keywords are the table's names, with its defaults.
    defaults = mpsae.defaults()
    for func in (mpsae.train, mpsae.Trainer.__init__):
        params = inspect.signature(func).parameters
        for row in table:
            if row["name"] in ("nb_concepts", "k") and params[row["name"]].default in (None, inspect.Parameter.empty):
                continue  # positional, the library's default when None
            assert params[row["name"]].default == row["default"], (func.__qualname__, row["name"])
            assert defaults[row["name"]] == row["default"]
        assert "**" not in str(inspect.signature(func)), "every keyword is named in the signature"
    # Unknown keywords are refused, naming them.
    with pytest.raises(TypeError, match="unexpected training options: \\['learning_rate'\\]"):
        mpsae.train(np.zeros((4, 2), np.float32), learning_rate=1.0)


def _rust_sources():
    return [p for p in (REPO / "crates").rglob("*.rs") if "/tests/" not in str(p)]


def test_metrics_jsonl_has_one_writer():
    run_mod = REPO / "crates" / "mpsae" / "src" / "run" / "mod.rs"
    # The run folder's module alone opens the file (the extension only exports its name).
    exports = REPO / "crates" / "mpsae-py" / "src" / "lib.rs"
    for path in _rust_sources():
        text = re.sub(r"//[^\n]*", "", path.read_text())
        if path == run_mod:
            continue
        if path != exports:
            assert "METRICS_FILE" not in text, path
        assert "metrics_path" not in text and '"metrics.jsonl"' not in text, path
    for path in (REPO / "python" / "mpsae").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"[\"']metrics\.jsonl[\"']", text) and "files.METRICS" not in text, path
    # ... and that writer is the session's (Run::append_metrics).
    assert "fn append_metrics" in run_mod.read_text()
    assert "append_metrics" in (REPO / "crates" / "mpsae" / "src" / "run" / "session.rs").read_text()


def _stub_tree():
    return ast.parse((REPO / "python" / "mpsae" / "_mpsae.pyi").read_text())


def _params(node):
    args = node.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"]


def test_stubs_match_the_extension():
    tree = _stub_tree()
    stubbed = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            stubbed.add(node.name)
            assert _params(node) == list(inspect.signature(getattr(_mpsae, node.name)).parameters), node.name
        elif isinstance(node, ast.ClassDef):
            stubbed.add(node.name)
            cls = getattr(_mpsae, node.name)
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                    if item.name != "__init__":
                        sig = inspect.signature(getattr(cls, item.name))
                        want = [p for p in sig.parameters if p != "self"]
                        assert _params(item) == want, f"{node.name}.{item.name}"
                    else:
                        assert _params(item) == list(inspect.signature(cls).parameters), f"{node.name}()"
                elif isinstance(item, ast.AnnAssign):
                    members.add(item.target.id)
            public = {n for n in dir(cls) if not n.startswith("_")}
            assert members - {"__init__"} == public, node.name
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
    public = {n for n in dir(_mpsae) if not n.startswith("_")} | {"__version__"}
    assert stubbed == public
