"""Every bad input raises a Python exception with the library's message."""
import numpy as np
import pytest

import mpsae


def test_bad_inputs_raise_python_exceptions(tmp_path):
    m = mpsae.MpSAE(8, 16, k=2)
    with pytest.raises(ValueError, match="number of concepts"):
        mpsae.MpSAE(8, 0)
    with pytest.raises(ValueError, match="k"):
        mpsae.MpSAE(8, 16, k=0)
    with pytest.raises(ValueError, match="dropout"):
        mpsae.MpSAE(8, 16, dropout=1.5)
    with pytest.raises(ValueError, match="normalization"):
        mpsae.MpSAE(8, 16, dictionary_params={"normalization": "l3"})
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mpsae.MpSAE(8, 16, device="tpu")
    with pytest.raises(ValueError, match="dimension 5"):
        m.encode(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        m.encode(np.zeros(8, np.float32))
    with pytest.raises(TypeError, match="floats"):
        m.encode(np.zeros((3, 8), np.int32))
    with pytest.raises(ValueError, match="outside the dictionary"):
        m.decode_sparse(np.array([[99]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="missing key"):
        m.load_state_dict({"dictionary.multiplier": np.zeros(())})
    with pytest.raises(ValueError, match="shape"):
        m.load_state_dict({"dictionary._weights": np.zeros((4, 4)), "dictionary.multiplier": np.zeros(())})
    with pytest.raises(FileNotFoundError):
        mpsae.load(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        mpsae.train(str(tmp_path / "missing.npy"), 16, 2)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match="bad.npy"):
        mpsae.train(str(bad), 16, 2)
    nan = np.ones((10, 8), np.float32)
    nan[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        mpsae.train(nan, 16, 2, progress=False)
    with pytest.raises(TypeError, match="unexpected training options"):
        mpsae.train(np.ones((10, 8), np.float32), 16, 2, learning_rate=1.0)
    with pytest.raises(ValueError, match="batch size"):
        mpsae.train(np.ones((10, 8), np.float32), 16, 2, batch_size=0)
    with pytest.raises(OSError):
        mpsae.train(np.ones((10, 8), np.float32), 16, 2, out="/proc/nope/run", progress=False)
    with pytest.raises(ValueError, match="threads"):
        mpsae.MpSAE(8, 16, threads=0)
