import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FL_MDISC_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A generated CIFAR-shaped dataset in the npz layout (no real data needed)."""
    root = tmp_path_factory.mktemp("data")
    d = root / "cifar10"
    d.mkdir()
    rng = np.random.default_rng(0)
    # class-dependent means so that a model can learn something
    def make(n):
        y = rng.integers(0, 10, n)
        base = (y[:, None, None, None] * 23 % 256).astype(np.float64)
        x = np.clip(base + rng.normal(0, 40, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)
    xtr, ytr = make(1600)
    xte, yte = make(300)
    np.savez_compressed(d / "train.npz", x=xtr, y=ytr)
    np.savez_compressed(d / "test.npz", x=xte, y=yte)
    return root


def tiny_overrides(data_root, cache_dir, out_dir, *extra):
    return [f"data_root={data_root}", f"cache_dir={cache_dir}", f"out_dir={out_dir}",
            "model.width=4", "split.burnin=1000", "split.probe=500", "split.calib=100", "burnin.epochs=2", "burnin.hist_epoch=1",
            "burnin.batch_size=100", "burnin.calib_steps=3", "fed.num_clients=3", "fed.batch_size=50",
            "++attack.val_size=50", "++attack.trigger_size=50", "num_rounds=3",
            "eval_every=1", "checkpoint_every=1", *extra]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, tiny_data_root):
    """(data root, burn-in cache, base folder) of the tiny config, one burn-in cache for the whole session."""
    base = tmp_path_factory.mktemp("tiny")
    torch.set_num_threads(2)
    return tiny_data_root, base / "cache", base


def tiny_cfg(tiny, *extra):
    """The composed, path-resolved tiny config with ``extra`` overrides."""
    from fl_mdisc.config import compose, resolve_paths

    data, cache, base = tiny
    cfg = compose(tiny_overrides(data, cache, base / "out", *extra))
    resolve_paths(cfg)
    return cfg


class TinyNet(torch.nn.Module):
    """A small linear-ish classifier for maths tests (no BN, deterministic)."""

    def __init__(self, seed=0, in_dim=3 * 8 * 8, classes=4):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = torch.nn.Linear(in_dim, 16)
        self.fc2 = torch.nn.Linear(16, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))
