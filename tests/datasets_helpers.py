"""Tiny SVHN and CIFAR-100 files in torchvision's exact on-disk formats (no real data here: issue 29).

torchvision checks each file's MD5 against the real release, which a synthetic file cannot match; the tests switch
that one check off (:func:`accept_any_md5`, and a ``sitecustomize`` for the processes a run starts), never the reading.
"""

import pickle
from pathlib import Path

import numpy as np

SITECUSTOMIZE = '''# written by tests/datasets_helpers.py: synthetic files cannot match the real releases' MD5.
# Lazy: torchvision.datasets.utils gets the patch when (and only if) a process imports it, so that Ray's and
# Flower's own processes start as fast as without this file.
import importlib.abc
import importlib.util
import sys


class _AcceptAnyMd5(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision.datasets.utils":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.check_md5 = lambda fpath, md5, **kw: True

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AcceptAnyMd5())
'''


def _images(rng, y, n_classes):
    base = (y[:, None, None, None] * (256 // n_classes + 1) % 256).astype(np.float64)
    return np.clip(base + rng.normal(0, 30, (len(y), 32, 32, 3)), 0, 255).astype(np.uint8)  # N, H, W, C


def write_cifar100(root: Path, n_train=1600, n_test=300, seed=0) -> dict:
    """``root/cifar-100-python/{train,test,meta}`` as the release pickles them (latin-1 dicts, rows of 3072 bytes in
    channel-major order, ``fine_labels`` 0..99). Returns the arrays written (N, H, W, C)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        y = np.concatenate([np.arange(100), rng.integers(0, 100, n - 100)])  # every class present
        x = _images(rng, y, 100)
        rows = x.transpose(0, 3, 1, 2).reshape(n, 3072)  # the release's layout: R plane, G plane, B plane
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{part}ing batch 1 of 1",
                 "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": rows}
        (d / part).write_bytes(pickle.dumps(entry, protocol=2))
        out[part] = (x, y)
    meta = {"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": [f"super{i}" for i in range(20)]}
    (d / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def write_svhn(root: Path, n_train=1600, n_test=300, n_extra=0, seed=0) -> dict:
    """``root/{train,test[,extra]}_32x32.mat`` as the release stores them (MATLAB ``X`` of shape (32, 32, 3, N) uint8,
    ``y`` of shape (N, 1) with labels 1..10, 10 meaning the digit 0). Returns the arrays written with labels 0..9."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test), ("extra", n_extra)):
        if n == 0:
            continue
        y = np.concatenate([np.arange(10), rng.integers(0, 10, n - 10)])
        x = _images(rng, y, 10)
        mat_y = np.where(y == 0, 10, y).astype(np.uint8)[:, None]
        savemat(root / f"{part}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": mat_y})
        out[part] = (x, y)
    return out
