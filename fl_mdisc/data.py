"""Datasets, splits, client partitions and per-client streams.

Data are loaded from a data root (config ``data_root``, else env ``FL_MDISC_DATA``, else ``./data``) in
either of two layouts:

* the npz layout of ``shared/data``: ``ROOT/<name>/{train,test}.npz`` with ``x`` uint8 (N,H,W[,C]) and
  ``y`` int64 (N,);
* torchvision's own layout, read by torchvision's dataset classes (which check each file's MD5):
  ``ROOT/cifar-10-batches-py``, ``ROOT/cifar-100-python`` (fine labels, 100 classes), ``ROOT/MNIST/raw``,
  ``ROOT/{train,test,extra}_32x32.mat`` (SVHN; its label 10 is the digit 0, mapped to 0 by torchvision).

Where neither exists, torchvision downloads the data if the network is reachable; offline, one
:class:`DataError` names the files and the folder. SVHN's ``extra`` set (531,131 images, 1.3 GB) is read only with
``dataset.extra=true``: the papers train on ``train_32x32.mat`` alone. Pixels stay in [0, 1]; normalisation lives in the model,
so attack/defence budgets (eps = 0.2) are in raw pixel units as in the official code.

Decoding (inflating an npz, reading torchvision's pickles or .mat files, NCHW transposition) costs about a second
for CIFAR-10; with a ``cache_dir`` the decoded arrays are kept there once as ``.npy`` files
(``decoded/<name>-<key>``, the key from the source files' paths, sizes and modification times) and every later
process maps them (copy-on-write) instead: a Deployment Engine ClientApp, which is a new process per message,
then reads only the rows it indexes. Same arrays, byte for byte.

Split (fixed by ``split_seed``, independent of the run seed; the run seed redraws everything inside it):
``burnin_train | probe | pool``: the burn-in trains on ``burnin_train``; the server's DGC probe set is
``probe`` (clean, disjoint from the test set and from every client); the clients' partitions come from
``pool``. Streams: a client consumes its partition in batches of B, one fresh batch per round, in an order
drawn from (seed, partition id, pass), so no sample repeats within a pass and the order survives Ray
recycling the client's actor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

_HELP = (
    "put train.npz/test.npz (x uint8 N,H,W[,C]; y int64) in {root}/{name}/ or torchvision's files ({files}) in {root}, "
    "or point data_root=... / FL_MDISC_DATA at the folder that has them (e.g. ../shared/data)"
)

# name -> (torchvision class, its files under the data root, how to ask for the train / test / extra split)
TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py/", "train"),
    "cifar100": ("CIFAR100", "cifar-100-python/", "train"),
    "mnist": ("MNIST", "MNIST/raw/", "train"),
    "svhn": ("SVHN", "train_32x32.mat, test_32x32.mat", "split"),
}


def _help(name: str, root: Path) -> str:
    files = TORCHVISION[name][1] + (" (and extra_32x32.mat with dataset.extra=true)" if name == "svhn" else "")
    return _HELP.format(root=root, name=name, files=files)


@dataclass(frozen=True)
class ArrayDataset:
    x_train: np.ndarray  # uint8 (N, C, H, W)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.uint8)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise DataError(f"cannot read {path} ({exc.__class__.__name__}: {exc}); re-copy the file") from None
    if x.dtype != np.uint8 or len(x) != len(y):
        raise DataError(f"{path}: expected x uint8 and len(x) == len(y); got {x.dtype}, {len(x)} vs {len(y)}")
    return _to_nchw(x), y.astype(np.int64)


def _torchvision_split(name: str, root: Path, part: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split (``train`` / ``test`` / ``extra``) through torchvision's own class, as uint8 NCHW and int64 labels."""
    import torchvision

    cls_name, _files, how = TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    kw = {"split": part} if how == "split" else {"train": part == "train"}
    ds = cls(str(root), download=download, **kw)
    x = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
    y = getattr(ds, "targets", None)
    y = ds.labels if y is None else y  # SVHN keeps its labels in ``labels``
    y = y.numpy() if torch.is_tensor(y) else np.asarray(y)
    return _to_nchw(x), y.astype(np.int64)


def _load_torchvision(name: str, root: Path, download: bool, extra: bool = False) -> ArrayDataset:
    xtr, ytr = _torchvision_split(name, root, "train", download)
    xte, yte = _torchvision_split(name, root, "test", download)
    if extra:
        xex, yex = _torchvision_split(name, root, "extra", download)
        xtr, ytr = np.concatenate([xtr, xex]), np.concatenate([ytr, yex])
    return ArrayDataset(xtr, ytr, xte, yte)


def _has_torchvision_files(name: str, root: Path) -> bool:
    first = TORCHVISION[name][1].split(",")[0].strip().rstrip("/")
    return (root / first).exists()


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, root: str, download: bool = True, extra: bool = False) -> ArrayDataset:
    """Load a dataset from ``root`` (npz or torchvision layout); download only where files are missing.

    ``extra``: append SVHN's ``extra`` split to its training set (torchvision layout only)."""
    if name not in TORCHVISION:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(TORCHVISION)}")
    if extra and name != "svhn":
        raise DataError(f"dataset.extra=true is SVHN's extra split; {name} has none (set dataset.extra=false)")
    rootp = Path(root)
    for d in (rootp / name, rootp):
        if not extra and (d / "train.npz").is_file() and (d / "test.npz").is_file():
            xtr, ytr = _load_npz(d / "train.npz")
            xte, yte = _load_npz(d / "test.npz")
            return ArrayDataset(xtr, ytr, xte, yte)
    if _has_torchvision_files(name, rootp):
        try:
            return _load_torchvision(name, rootp, download=False, extra=extra)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name} files under {rootp} are incomplete or corrupted ({exc}); " + _help(name, rootp)) from None
    if download and not os.environ.get("FL_MDISC_OFFLINE"):
        try:
            rootp.mkdir(parents=True, exist_ok=True)
            return _load_torchvision(name, rootp, download=True, extra=extra)
        except Exception:  # noqa: BLE001 - offline or refused: fall through to the clear error
            pass
    raise DataError(f"{name} not found under {rootp} and it could not be downloaded; " + _help(name, rootp))


def load_for(cfg) -> ArrayDataset:
    """The dataset a config names, checked against its config (``dataset.shape``, ``dataset.num_classes``); decoded
    once into ``cfg.cache_dir`` when it is set (:func:`load_decoded`)."""
    name, root, extra = str(cfg.dataset.name), str(cfg.data_root), bool(cfg.dataset.get("extra"))  # extra: SVHN only
    cache = cfg.get("cache_dir")
    ds = load_decoded(name, root, extra, str(cache)) if cache else load_dataset(name, root, extra=extra)
    check_against(ds, cfg.dataset)
    return ds


_FIELDS = ("x_train", "y_train", "x_test", "y_test")


def _source_files(name: str, root: Path, extra: bool) -> list[Path]:
    """The files :func:`load_dataset` reads for ``name`` under ``root`` (empty: none there yet)."""
    for d in (root / name, root):
        if not extra and (d / "train.npz").is_file() and (d / "test.npz").is_file():
            return [d / "train.npz", d / "test.npz"]
    if name == "svhn":
        return [root / f for f in ("train_32x32.mat", "test_32x32.mat", "extra_32x32.mat")[: 3 if extra else 2]
                if (root / f).is_file()]
    first = root / TORCHVISION[name][1].split(",")[0].strip().rstrip("/")
    return sorted(p for p in first.rglob("*") if p.is_file()) if first.is_dir() else []


def load_decoded(name: str, root: str, extra: bool, cache_dir: str) -> ArrayDataset:
    """:func:`load_dataset`, decoded once into ``cache_dir/decoded/<name>-<key>`` and memory-mapped from there.

    The key hashes every source file's resolved path, size and modification time, so new files give a new folder.
    The folder is written under a temporary name and renamed into place whole, so concurrent first runs cannot leave
    a half-written one. Without source files (a download is due) it is plain :func:`load_dataset`."""
    files = _source_files(name, Path(root), extra)
    if not files:
        return load_dataset(name, root, extra=extra)
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([name, extra, stamp]).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / "decoded" / f"{name}-{key}"
    if (folder / "done").is_file():
        return ArrayDataset(*(np.load(folder / f"{f}.npy", mmap_mode="c") for f in _FIELDS))
    ds = load_dataset(name, root, extra=extra)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in _FIELDS:
        np.save(tmp / f"{f}.npy", getattr(ds, f))
    (tmp / "done").write_text(json.dumps(stamp))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process put it there first
        shutil.rmtree(tmp, ignore_errors=True)
    return ds


def check_against(ds: ArrayDataset, dcfg) -> None:
    """One clear error when the files on disk are not the dataset the config describes."""
    shape, k = tuple(int(v) for v in dcfg.shape), int(dcfg.num_classes)
    for part, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if tuple(x.shape[1:]) != shape:
            raise DataError(f"{dcfg.name} {part} images have shape {tuple(x.shape[1:])}, the config says {shape}; "
                            f"the files under data_root are another dataset (or set dataset.shape)")
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{dcfg.name} {part} labels span {int(y.min())}..{int(y.max())}, outside the config's "
                            f"{k} classes; the files under data_root are another dataset (or set dataset.num_classes)")


def to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 in [0, 1]."""
    t = torch.as_tensor(x)
    return t.float().div_(255.0)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with ``pad`` zero padding + random horizontal flip, per sample (batched).

    Same distribution as torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()``, drawn
    from an explicit generator so that a stream batch is reproducible from (seed, partition, round).
    """
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (oy[:, None] + torch.arange(h)[None, :])  # (n, h)
    cols = (ox[:, None] + torch.arange(w)[None, :])  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Split:
    burnin_train: np.ndarray
    probe: np.ndarray
    pool: np.ndarray
    calib: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def make_split(n_train: int, burnin: int, probe: int, split_seed: int = 0, calib: int = 0) -> Split:
    """``burnin_train | calib | probe`` (together ``burnin`` images, all server-held) ``| pool`` (the clients).

    ``calib`` is the server's clean calibration set (simulated honest updates, :mod:`fl_mdisc.calibration`),
    held out of the burn-in's training like the probe set; with ``calib=0`` the split is the one of earlier
    versions.
    """
    if burnin >= n_train:
        raise DataError(f"split.burnin={burnin} leaves no data for the clients (train set has {n_train})")
    if probe + calib >= burnin:
        raise DataError(f"split.probe + split.calib = {probe + calib} must be smaller than split.burnin={burnin}")
    perm = np.random.default_rng(split_seed).permutation(n_train)
    return Split(perm[: burnin - probe - calib], perm[burnin - probe: burnin], perm[burnin:],
                 perm[burnin - probe - calib: burnin - probe])


def burnin_size(burnin, n_train: int) -> int:
    """``split.burnin`` as a number of images: a share of the training set when in (0, 1), else a count.

    >>> burnin_size(0.8, 50_000), burnin_size(0.8, 73_257), burnin_size(1000, 50_000)
    (40000, 58606, 1000)
    """
    b = float(burnin)
    return int(round(b * n_train)) if 0 < b < 1 else int(b)


def split_of(cfg, n_train: int) -> Split:
    """The split a config asks for."""
    return make_split(n_train, burnin_size(cfg.split.burnin, n_train), int(cfg.split.probe),
                      calib=int(cfg.split.calib or 0))


def partition_pool(pool: np.ndarray, labels: np.ndarray, num_partitions: int, method: str = "iid",
                   alpha: float = 0.5, seed: int = 0, min_size: int = 0, classes_per_client: int = 2) -> list[np.ndarray]:
    """Partition the pool among clients, through flwr-datasets' partitioners where they exist.

    * ``iid``: an even split of the pool shuffled by ``seed`` (flwr-datasets' IidPartitioner takes contiguous
      shards without a seed, so the shuffle is ours);
    * ``dirichlet``: ``DirichletPartitioner(alpha)`` by label (Hsu et al. 2019), seeded by ``seed``; it redraws (up to
      10 times) until every partition holds at least ``min_size`` images;
    * ``pathological``: ``PathologicalPartitioner`` with ``classes_per_client`` classes per client (McMahan et al.
      2017's k-classes split), classes drawn at random by ``seed``.
    """
    if num_partitions > len(pool):
        raise DataError(f"{num_partitions} clients but only {len(pool)} pool images; use fewer clients or a smaller "
                        "split.burnin")
    if method == "iid":
        parts = np.array_split(np.random.default_rng([seed, 6151]).permutation(pool), num_partitions)
    elif method in ("dirichlet", "pathological"):
        from datasets import Dataset
        from flwr_datasets.partitioner import DirichletPartitioner, PathologicalPartitioner

        if method == "dirichlet":
            part = DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=alpha,
                                        min_partition_size=int(min_size), self_balancing=False, seed=seed)
        else:
            part = PathologicalPartitioner(num_partitions=num_partitions, partition_by="label",
                                           num_classes_per_partition=int(classes_per_client),
                                           class_assignment_mode="random", shuffle=True, seed=seed)
        part.dataset = Dataset.from_dict({"label": labels[pool].tolist(), "idx": pool.tolist()})
        try:
            parts = [np.asarray(part.load_partition(i)["idx"], dtype=np.int64) for i in range(num_partitions)]
        except ValueError as exc:
            raise DataError(f"{method} partitioning of {len(pool)} images into {num_partitions} clients failed ({exc}); "
                            "use fewer clients, a larger alpha or a smaller fed.min_partition_size") from None
    else:
        raise DataError(f"unknown partition method {method!r}; choose iid, dirichlet or pathological")
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise DataError(f"{method} partitioning left client(s) {empty[:5]} without data; use fewer clients, "
                        "a larger alpha or more classes per client")
    return parts


def stream_batch(indices: np.ndarray, batch_size: int, seed: int, partition_id: int, step: int) -> np.ndarray:
    """The ``step``-th (0-based) batch of a partition's stream.

    Batches within one pass are disjoint (a pass is one permutation of the partition, drawn from
    (seed, partition_id, pass)); the remainder that does not fill a batch waits for the next pass. A partition
    smaller than one batch (non-IID splits, large federations) sends its whole partition, reshuffled, as its
    batch: one batch per pass (FedAvg weighs it by its size).
    """
    n = len(indices)
    if n == 0:
        raise DataError(f"partition {partition_id} is empty; use fewer clients or another partition")
    bs = min(int(batch_size), n)
    per_pass = n // bs
    pas, pos = divmod(step, per_pass)
    perm = np.random.default_rng([seed, partition_id, pas, 7919]).permutation(n)
    return indices[perm[pos * bs: (pos + 1) * bs]]


def attacker_split(indices: np.ndarray, val_size: int, trigger_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the attacker's own partition into (validation, trigger, stream) — never test data."""
    need = val_size + trigger_size + 1
    if len(indices) < need:
        raise DataError(f"the attacker's partition has {len(indices)} samples; it needs at least {need} "
                        "(attack.val_size + attack.trigger_size + a stream); use fewer clients or fed.attacker_data=pool")
    perm = np.random.default_rng([seed, 104729]).permutation(indices)
    return perm[:val_size], perm[val_size: val_size + trigger_size], perm[val_size + trigger_size:]
