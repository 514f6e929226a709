"""SVHN and CIFAR-100 (issue 29): torchvision's own classes read tiny synthetic files in the releases' exact formats;
the class count flows from the dataset's config to the model's head, the run's summary and Table 1; offline, one
error names the files and the folder; no CIFAR-10 size is left in the code."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_mdisc.data import burnin_size, check_against, load_dataset
from fl_mdisc.errors import DataError

from .conftest import REPO, tiny_overrides
from .datasets_helpers import SITECUSTOMIZE, write_cifar100, write_svhn


@pytest.fixture
def accept_any_md5(monkeypatch):
    import torchvision.datasets.utils as u

    monkeypatch.setattr(u, "check_md5", lambda fpath, md5, **kw: True)
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def test_cifar100_through_torchvision(tmp_path, accept_any_md5):
    written = write_cifar100(tmp_path, n_train=400, n_test=150)
    ds = load_dataset("cifar100", str(tmp_path), download=False)
    x, y = written["train"]
    assert ds.x_train.shape == (400, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert np.array_equal(ds.x_train, x.transpose(0, 3, 1, 2)) and np.array_equal(ds.y_train, y)
    assert ds.x_test.shape == (150, 3, 32, 32) and set(ds.y_train) == set(range(100))


def test_svhn_through_torchvision_maps_label_10_to_digit_0(tmp_path, accept_any_md5):
    written = write_svhn(tmp_path, n_train=300, n_test=120, n_extra=50)
    ds = load_dataset("svhn", str(tmp_path), download=False)
    x, y = written["train"]
    assert np.array_equal(ds.x_train, x.transpose(0, 3, 1, 2)) and np.array_equal(ds.y_train, y)
    assert ds.y_train.min() == 0 and ds.y_train.max() == 9 and len(ds.y_test) == 120
    with_extra = load_dataset("svhn", str(tmp_path), download=False, extra=True)
    assert len(with_extra.y_train) == 350 and np.array_equal(with_extra.y_train[300:], written["extra"][1])


def test_a_real_release_checksum_is_still_enforced(tmp_path):
    write_svhn(tmp_path, n_train=50, n_test=20)
    load_dataset.cache_clear()
    with pytest.raises(DataError, match="svhn files under .* incomplete or corrupted"):
        load_dataset("svhn", str(tmp_path), download=False)


@pytest.mark.parametrize("name, files", [("svhn", "train_32x32.mat, test_32x32.mat"), ("cifar100", "cifar-100-python/")])
def test_offline_error_names_the_files_and_the_folder(tmp_path, monkeypatch, name, files):
    monkeypatch.setenv("FL_MDISC_OFFLINE", "1")
    load_dataset.cache_clear()
    with pytest.raises(DataError) as e:
        load_dataset(name, str(tmp_path))
    assert files in str(e.value) and str(tmp_path) in str(e.value) and "FL_MDISC_DATA" in str(e.value)


def test_files_of_another_dataset_are_one_clear_error(tiny_data_root):
    from fl_mdisc.config import compose

    ds = load_dataset("cifar10", str(tiny_data_root))
    with pytest.raises(DataError, match="shape .* another dataset"):
        check_against(ds, compose(["dataset=mnist"]).dataset)
    check_against(ds, compose(["dataset=cifar100"]).dataset)  # 10 labels fit in 100 classes
    bad = ds.__class__(ds.x_train, ds.y_train + 95, ds.x_test, ds.y_test)
    with pytest.raises(DataError, match="labels span .* 100 classes"):
        check_against(bad, compose(["dataset=cifar100"]).dataset)


def test_dataset_configs_carry_their_sizes_and_the_model_head_follows():
    from fl_mdisc.config import compose
    from fl_mdisc.models import build_model

    for name, k, n in (("cifar10", 10, 50_000), ("cifar100", 100, 50_000), ("svhn", 10, 73_257), ("mnist", 10, 60_000)):
        cfg = compose([f"dataset={name}"])
        assert cfg.dataset.num_classes == k and cfg.dataset.train_size == n
        assert build_model(cfg.model, cfg.dataset).fc.out_features == k
        assert burnin_size(cfg.split.burnin, n) == round(0.8 * n)  # the burn-in is a share: SVHN's pool is larger
    assert compose(["dataset=svhn"]).dataset.extra is False


SUSPECTS = re.compile(r"\b(50_?000|60_?000|73_?257|10_?000)\b|range\(10\)|minlength=10|num_classes\s*=\s*10|"
                      r"\b600\b|% ?10\b")


def test_no_cifar10_constant_left_in_the_code():
    """The usual suspects of a CIFAR-10-only code base: its sizes, its class count and the carve of 600 images."""
    found = []
    for d in ("fl_mdisc", "strategies", "clients"):
        for p in sorted((REPO / d).glob("*.py")):
            for i, line in enumerate(p.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if SUSPECTS.search(code) and '"""' not in line and not code.strip().startswith((">>>", "(")):
                    found.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    allowed = {"fl_mdisc/calib_sim.py": "SIMULATED_ID_OFFSET = 50_000"}  # an id offset, not a size
    found = [f for f in found if not any(f.startswith(k) and v in f for k, v in allowed.items())]
    assert not found, "\n".join(found)


def _subprocess_env(tmp_path: Path) -> dict:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    env["FL_MDISC_OFFLINE"] = "1"
    return env


def _cli(env, *args):
    p = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stdout


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One data root with tiny CIFAR-100 and SVHN files, and the environment of the processes a run starts."""
    tmp = tmp_path_factory.mktemp("datasets")
    write_cifar100(tmp / "data")
    write_svhn(tmp / "data")
    return tmp, _subprocess_env(tmp)


@pytest.mark.slow
def test_a_2_round_run_on_each_dataset(both):
    """`fl-mdisc run --multirun dataset=cifar100,svhn`: both cells in one `flwr run`, every process reading the files
    through torchvision; the class count reaches the model's head (the run would fail on a label >= the head's size)
    and the summary."""
    tmp, env = both
    ov = tiny_overrides(tmp / "data", tmp / "cache", tmp / "run", "num_rounds=2", "strategy=gc", "attack=lambda_update")
    _cli(env, "run", "--multirun", "--quiet", *ov, "dataset=cifar100,svhn")
    for name, classes in (("cifar100", 100), ("svhn", 10)):
        summary = json.loads((tmp / "run" / "cells" / f"dataset-{name}" / "summary.json").read_text())
        assert summary["dataset"] == name and summary["num_classes"] == classes and summary["last_round"] == 2


@pytest.mark.slow
def test_a_2_round_table1_cell_on_each_dataset(both):
    """`fl-mdisc table1 datasets=[cifar100,svhn]`: the paper's blocks in one sweep, each beside the paper's rows and
    DSC threshold for that dataset."""
    tmp, env = both
    out = tmp / "t1"
    ov = [o for o in tiny_overrides(tmp / "data", tmp / "cache", out) if not o.startswith("num_rounds=")]
    _cli(env, "table1", *ov, "num_rounds=2", "methods=[dsc]", "scenarios=[poisoned]", "datasets=[cifar100,svhn]")
    for name, classes, title, mu in (("cifar100", 100, "CIFAR-100", 1.7), ("svhn", 10, "SVHN", 0.5)):
        doc = json.loads((out / name / "table1.json").read_text())
        assert doc["dataset"] == name and [r["method"] for r in doc["rows"]] == ["dsc"]
        cell = out / "cells" / f"{name}-online-poisoned-dsc-s0" / "summary.json"
        assert json.loads(cell.read_text())["num_classes"] == classes
        md = (out / name / "table1.md").read_text()
        assert title in md and f"mu = {mu}" in md  # the paper's threshold for that dataset
