"""Import circles in the workspace: Rust files (``crate::`` paths between modules) and the Python
package (``from . import``). Prints each circle; exits 1 when there is one.

A Rust file depends on the module file each ``crate::a::b`` path it names resolves to (the
deepest module that exists), and on the file defining an item re-exported there when the
re-export can be followed. Edges between a module and its own ancestors (a ``mod.rs`` that
declares and re-exports its submodules, a submodule that uses its parent's items) are the
module tree, not imports, and are left out.

    python3 tests/structure/imports.py [REPO]
"""
from __future__ import annotations

import ast
import os
import re
import sys
from typing import Dict, List, Set


def rust_modules(src: str) -> Dict[tuple, str]:
    """Module path (tuple) -> file, for one crate's ``src``."""
    mods = {}
    for root, _, names in os.walk(src):
        for n in names:
            if not n.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, n), src)[:-3].split(os.sep)
            if rel[-1] in ("lib", "main"):
                rel = rel[:-1]
            elif rel[-1] == "mod":
                rel = rel[:-1]
            mods[tuple(rel)] = os.path.join(root, n)
    return mods


USE = re.compile(r"\buse\s+crate::([^;]+);", re.S)
PATH = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)")


def expand(tree: str) -> List[str]:
    """``a::{b, c::{d}}`` -> ``["a::b", "a::c::d"]``."""
    tree = re.sub(r"\s+", "", tree)
    out: List[str] = []

    def walk(prefix: str, rest: str) -> None:
        i = rest.find("{")
        if i < 0:
            for part in split(rest):
                out.append(prefix + part)
            return
        head, body = rest[:i], rest[i + 1:-1]
        for part in split(body):
            walk(prefix + head, part)

    def split(s: str) -> List[str]:
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        if cur:
            parts.append(cur)
        return parts

    walk("", tree)
    return [p for p in out if p]


def resolve(path: str, mods: Dict[tuple, str]) -> tuple:
    parts = [p for p in path.split("::") if p and p not in ("self", "*")]
    parts = [p.split(" as ")[0] for p in parts]
    best: tuple = ()
    for i in range(len(parts) + 1):
        if tuple(parts[:i]) in mods:
            best = tuple(parts[:i])
    return best


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def rust_graph(src: str) -> Dict[str, Set[str]]:
    mods = rust_modules(src)
    graph: Dict[str, Set[str]] = {f: set() for f in mods.values()}
    for mod, f in mods.items():
        text = strip_comments(open(f, encoding="utf-8").read())
        paths = [p for m in USE.finditer(text) for p in expand(m.group(1))]
        paths += [m.group(1) for m in PATH.finditer(text)]
        for p in paths:
            target = resolve(p, mods)
            if target == mod or mod[:len(target)] == target or target[:len(mod)] == mod:
                continue  # itself, an ancestor or a descendant: the module tree
            graph[f].add(mods[target])
    return graph


def python_graph(pkg: str) -> Dict[str, Set[str]]:
    files = {n[:-3]: os.path.join(pkg, n) for n in os.listdir(pkg) if n.endswith(".py")}
    graph: Dict[str, Set[str]] = {f: set() for f in files.values()}
    name = os.path.basename(pkg)
    for mod, f in files.items():
        if mod == "__init__":
            continue  # the package's face re-exports everything
        tree = ast.parse(open(f, encoding="utf-8").read())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or (node.module or "").startswith(name):
                    base = (node.module or "").split(".")[-1] if node.level == 1 else (node.module or "").split(".")[1:] or [""]
                    base = base if isinstance(base, str) else base[0]
                    if base:
                        targets.append(base)
                    else:
                        targets += [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == name:
                        targets.append("__init__")
                    elif a.name.startswith(name + "."):
                        targets.append(a.name.split(".")[1])
            for t in targets:
                if t in files and files[t] != f:
                    graph[f].add(files[t])
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one file (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def all_circles(repo: str) -> List[List[str]]:
    found = []
    crates = os.path.join(repo, "crates")
    for c in sorted(os.listdir(crates)):
        src = os.path.join(crates, c, "src")
        if os.path.isdir(src):
            found += circles(rust_graph(src))
    found += circles(python_graph(os.path.join(repo, "python", "mpsae")))
    return [[os.path.relpath(f, repo) for f in comp] for comp in found]


if __name__ == "__main__":
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    found = all_circles(repo)
    for comp in found:
        print("import circle: " + " <-> ".join(comp))
    print(f"{len(found)} import circles")
    sys.exit(1 if found else 0)
