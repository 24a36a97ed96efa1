"""Shared helpers of the Python tests: the repository's test data and the CLI binary."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = pathlib.Path(os.environ.get("MPSAE_FIXTURES_DIR", REPO / "testdata" / "fixtures"))
DATA = REPO / "testdata" / "data"


def load_fixture(path):
    """Tensors (numpy) and the `info` metadata of a golden file."""
    from safetensors.numpy import load_file
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        info = json.loads(f.metadata()["info"])
    return load_file(str(path)), info


@pytest.fixture(scope="session")
def cli():
    """The `mpsae` binary of this checkout (built by cargo if needed)."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    exe = target / "release" / "mpsae"
    if not exe.exists():
        subprocess.run(["cargo", "build", "--release", "-p", "mpsae-cli"], cwd=REPO, check=True)
    return str(exe)


@pytest.fixture
def real_rows():
    """The first 4096 SmolLM2 rows (float16) committed in testdata."""
    return np.load(DATA / "smollm2_l15_public.npy")


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt during the test, as in an interactive session: Python
    installs no handler when its parent ignored SIGINT (nohup, a suite started in the background
    with `(trap '' INT; ...)`)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
