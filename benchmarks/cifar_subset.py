"""Write a seeded random subset of the CIFAR-10 npz files (for a short check on a machine the full files cannot
reach, e.g. the 10,000/2,000-image subset behind docs/results/paper-gpu/short-federated-*).

    .venv/bin/python benchmarks/cifar_subset.py SRC_ROOT DST_ROOT [n_train=10000] [n_test=2000]

Reads SRC_ROOT/cifar10/{train,test}.npz (x uint8 HWC, y int64), writes DST_ROOT/cifar10/{train,test}.npz.
"""
import sys
from pathlib import Path

import numpy as np

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
sizes = {"train": int(sys.argv[3]) if len(sys.argv) > 3 else 10000, "test": int(sys.argv[4]) if len(sys.argv) > 4 else 2000}
rng = np.random.default_rng(0)
(dst / "cifar10").mkdir(parents=True, exist_ok=True)
for name, n in sizes.items():
    d = np.load(src / "cifar10" / f"{name}.npz")
    idx = np.sort(rng.choice(len(d["y"]), n, replace=False))
    np.savez_compressed(dst / "cifar10" / f"{name}.npz", x=d["x"][idx], y=d["y"][idx].astype(np.int64))
    print(f"{name}: {n} of {len(d['y'])} images -> {dst / 'cifar10' / f'{name}.npz'}")
