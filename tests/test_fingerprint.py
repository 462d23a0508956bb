import numpy as np
import torch

from landprior import fingerprint
from landprior.fingerprint import array_fingerprint


def test_the_same_values_give_the_same_fingerprint_in_any_container(tmp_path, monkeypatch) -> None:
    """Array, tensor, memmap and big-endian copy of one dataset agree; one changed value,
    dtype or shape does not. Several hashing chunks (a small chunk size) too."""
    monkeypatch.setattr(fingerprint, "HASH_CHUNK_BYTES", 64)  # 3 rows per chunk here
    data = np.random.default_rng(0).normal(size=(10, 2, 3, 3)).astype(np.float32)
    np.save(tmp_path / "d.npy", data)
    base = array_fingerprint(data)
    assert base["shape"] == [10, 2, 3, 3] and base["dtype"] == "float32"
    assert array_fingerprint(torch.from_numpy(data)) == base
    assert array_fingerprint(np.load(tmp_path / "d.npy", mmap_mode="r")) == base
    assert array_fingerprint(data.astype(">f4")) == base
    changed = data.copy()
    changed[9, 1, 2, 2] += 1e-6
    assert array_fingerprint(changed)["blake2b"] != base["blake2b"]
    assert array_fingerprint(data.astype(np.float64))["dtype"] == "float64"
    assert array_fingerprint(data.reshape(10, 18))["blake2b"] != base["blake2b"]
