"""The README's Python quick start runs as written."""
import os
import re

from conftest import REPO


def test_readme_python_quick_start(tmp_path, capsys):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no Python quick start"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(compile(blocks[0], "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "concept" in out
