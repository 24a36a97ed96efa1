"""Run overcomplete 0.3.0's own MpSAE test cases against mpsae's PyTorch module (by hand).

    python bench/run_overcomplete_tests.py --checkout PATH/TO/overcomplete [--path auto|engine|torch] [pytest args...]

PATH is a source checkout of KempnerInstitute/overcomplete at the 0.3.0 version bump (its tests
are not committed here, and the release on the package index ships none). The script copies
`tests/utils.py` and the four SAE test files that exercise MpSAE into a temporary folder, with a
conftest that puts `mpsae.torch.MpSAE` in place of `overcomplete.sae.MpSAE` before they are
imported, and runs the cases parametrized with MpSAE. Needs the overcomplete package
(0.3.0) and mpsae installed in the running Python. `test_sae_cuda.py` is left out: it does not
collect under current pytest, even for overcomplete.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

FILES = ["test_base_sae.py", "test_sae_dictionary.py", "test_save_and_load.py", "test_train_sae.py"]

CONFTEST = '''
import overcomplete.sae
import overcomplete.sae.mp_sae
import mpsae.torch

overcomplete.sae.MpSAE = mpsae.torch.MpSAE
overcomplete.sae.mp_sae.MpSAE = mpsae.torch.MpSAE
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkout", required=True, type=pathlib.Path)
    ap.add_argument("--path", default=None, help="the module's pursuit path for every case (MPSAE_TORCH_PATH)")
    a, rest = ap.parse_known_args()
    if a.path:
        os.environ["MPSAE_TORCH_PATH"] = a.path
    src = a.checkout / "tests"
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "tests" / "sae").mkdir(parents=True)
        (root / "tests" / "__init__.py").write_text("")
        (root / "tests" / "sae" / "__init__.py").write_text("")
        shutil.copy(src / "utils.py", root / "tests" / "utils.py")
        for f in FILES:
            shutil.copy(src / "sae" / f, root / "tests" / "sae" / f)
        (root / "conftest.py").write_text(CONFTEST)
        # The cases parametrized with MpSAE itself (pytest's -k is case-insensitive and would take
        # JumpSAE and OMPSAE too).
        base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
        listed = subprocess.run([*base, "--collect-only", "-q", "tests/sae"], cwd=root, capture_output=True, text=True)
        ids = [l.strip() for l in listed.stdout.splitlines() if "[MpSAE]" in l or "[MpSAE-" in l]
        print(f"{len(ids)} MpSAE cases")
        return subprocess.run([*base, "-q", "-rfE", *ids, *rest], cwd=root).returncode


if __name__ == "__main__":
    sys.exit(main())
