import numpy as np
import pytest
import torch

from fl_mdisc.data import (attacker_split, augment, load_dataset, load_decoded, make_split, partition_pool, stream_batch,
                           to_float)
from fl_mdisc.errors import DataError

from .conftest import SHARED_DATA


class TestLoading:
    def test_npz_layout(self, tiny_data_root):
        ds = load_dataset("cifar10", str(tiny_data_root))
        assert ds.x_train.shape == (1600, 3, 32, 32) and ds.x_train.dtype == np.uint8
        assert ds.y_test.shape == (300,)

    def test_missing_data_is_one_clear_error(self, tmp_path):
        with pytest.raises(DataError, match="not found under .* put train.npz"):
            load_dataset("cifar10", str(tmp_path / "nothing"), download=False)

    def test_corrupted_file(self, tmp_path):
        d = tmp_path / "cifar10"
        d.mkdir()
        (d / "train.npz").write_bytes(b"garbage")
        (d / "test.npz").write_bytes(b"garbage")
        with pytest.raises(DataError, match="cannot read"):
            load_dataset("cifar10", str(tmp_path), download=False)

    def test_decoded_cache_gives_the_same_arrays_and_follows_the_files(self, tmp_path):
        import os
        import shutil

        root = tmp_path / "data"
        (root / "cifar10").mkdir(parents=True)
        rng = np.random.default_rng(1)
        for part, n in (("train", 40), ("test", 10)):
            np.savez_compressed(root / "cifar10" / f"{part}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                                y=rng.integers(0, 10, n))
        plain = load_dataset("cifar10", str(root), download=False)
        first = load_decoded("cifar10", str(root), False, str(tmp_path / "cache"))  # decodes and writes the folder
        (folder,) = (tmp_path / "cache" / "decoded").iterdir()
        again = load_decoded("cifar10", str(root), False, str(tmp_path / "cache"))  # maps it
        assert isinstance(again.x_train, np.memmap) and again.x_train.flags.writeable  # copy-on-write: no torch warning
        for f in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(getattr(first, f), getattr(plain, f)) and np.array_equal(getattr(again, f), getattr(plain, f))
            assert getattr(again, f).dtype == getattr(plain, f).dtype and getattr(again, f).shape == getattr(plain, f).shape
        # new files (another size or time) give another folder, never the old arrays
        shutil.copy(root / "cifar10" / "test.npz", root / "cifar10" / "train.npz")
        os.utime(root / "cifar10" / "train.npz", ns=(1, 1))
        load_dataset.cache_clear()
        swapped = load_decoded("cifar10", str(root), False, str(tmp_path / "cache"))
        assert len(swapped.x_train) == 10 and len(list((tmp_path / "cache" / "decoded").iterdir())) == 2
        assert folder.exists() and not list((tmp_path / "cache" / "decoded").glob("*.tmp-*"))

    @pytest.mark.skipif(not (SHARED_DATA / "cifar10" / "train.npz").exists(), reason="real CIFAR-10 not present")
    def test_real_cifar10(self):
        ds = load_dataset("cifar10", str(SHARED_DATA))
        assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
        assert list(ds.y_train[:5]) == [6, 9, 9, 4, 1]


class TestStream:
    def test_never_repeats_within_a_pass_and_covers_partition(self):
        part = np.arange(1000, 1530)  # 530 samples, B = 100 -> 5 batches per pass
        seen = np.concatenate([stream_batch(part, 100, seed=3, partition_id=2, step=s) for s in range(5)])
        assert len(seen) == len(set(seen)) == 500
        assert set(seen) <= set(part)
        nxt = np.concatenate([stream_batch(part, 100, 3, 2, s) for s in range(5, 10)])
        assert len(set(nxt)) == 500 and not np.array_equal(seen, nxt)  # a new pass, a new order

    def test_deterministic_per_seed_and_partition(self):
        part = np.arange(400)
        a = stream_batch(part, 50, 0, 1, 3)
        assert np.array_equal(a, stream_batch(part, 50, 0, 1, 3))
        assert not np.array_equal(a, stream_batch(part, 50, 1, 1, 3))
        assert not np.array_equal(a, stream_batch(part, 50, 0, 2, 3))

    def test_partition_smaller_than_batch(self):
        small = stream_batch(np.arange(10), 100, 0, 0, 0)  # smaller than a batch: the whole partition, reshuffled
        assert sorted(small) == list(range(10)) and not np.array_equal(small, stream_batch(np.arange(10), 100, 0, 0, 1))
        with pytest.raises(DataError, match="empty"):
            stream_batch(np.arange(0), 100, 0, 0, 0)


class TestSplitAndPartitions:
    def test_split_disjoint(self):
        sp = make_split(1000, burnin=600, probe=100)
        allidx = np.concatenate([sp.burnin_train, sp.probe, sp.pool])
        assert len(allidx) == len(set(allidx)) == 1000 and len(sp.probe) == 100 and len(sp.pool) == 400

    def test_iid_and_dirichlet_partitions_disjoint(self):
        pool = np.arange(2000)
        labels = np.random.default_rng(0).integers(0, 10, 2000)
        for method in ("iid", "dirichlet"):
            parts = partition_pool(pool, labels, 4, method, alpha=0.3)
            cat = np.concatenate(parts)
            assert len(cat) == len(set(cat)) == 2000

    def test_attacker_split(self):
        v, t, s = attacker_split(np.arange(800), 500, 100, seed=0)
        assert len(v) == 500 and len(t) == 100 and len(s) == 200
        assert len(set(np.concatenate([v, t, s]))) == 800
        with pytest.raises(DataError, match="at least"):
            attacker_split(np.arange(100), 500, 100, 0)


class TestAugment:
    def test_shape_range_and_determinism(self):
        x = to_float(np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8))
        a = augment(x, torch.Generator().manual_seed(1))
        b = augment(x, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1

    def test_is_a_crop_or_flip_of_the_padded_image(self):
        x = torch.arange(3 * 32 * 32, dtype=torch.float32).view(1, 3, 32, 32) + 1
        a = augment(x, torch.Generator().manual_seed(5))
        xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
        found = any(torch.equal(a[0], v[:, i:i + 32, j:j + 32])
                    for v in (xp[0], xp[0].flip(2)) for i in range(9) for j in range(9))
        assert found
