"""Every maintained benchmark still runs against today's code.

Each runs here at toy size, through its own command line: a few committed cells, the tiny generated dataset of
conftest.py, a few rounds, a width-4 model, the CPU. Two are run elsewhere or in part: deployment_faults.py by
tests/test_e2e_deployment.py (slow), and scale_rounds.py, whose 10-client pair runs here (slow: two Flower
simulations) while the overrides of its 100- and 1,000-client runs are composed against today's configuration.
Every name a benchmark imports from the project must still exist (a retired function, a renamed module)."""

import ast
import importlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
PROJECT = ("fl_mdisc", "strategies", "clients", "app")


def _run(*args, cwd=ROOT, env=None):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                       env=None if env is None else {**os.environ, **env})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def _cells(tmp_path, src: str, names: list[str]) -> Path:
    out = tmp_path / Path(src).name
    for n in names:
        shutil.copytree(ROOT / src / "cells" / n, out / "cells" / n)
    return out


def test_history_misses(tmp_path):
    grid = _cells(tmp_path, "docs/results/grid-history", ["iid-n5-poisoned-dgc-s0", "iid-n5-clean-dgc-s0"])
    _run(BENCH / "history_misses.py", grid, "--markdown", tmp_path / "m.md")
    assert "iid-n5-poisoned-dgc-s0" in (tmp_path / "m.md").read_text()


def test_history_separability(tmp_path):
    grid = _cells(tmp_path, "docs/results/grid-history", ["iid-n5-poisoned-dgc-s0", "iid-n5-clean-dgc-s0"])
    _run(BENCH / "history_separability.py", grid, "--markdown", tmp_path / "s.md")
    row = next(x for x in (tmp_path / "s.md").read_text().splitlines() if x.startswith("| iid-n5-poisoned-dgc-s0"))
    assert row.count("|") == 7 and "clean" not in (tmp_path / "s.md").read_text()


def test_history_gate_design(tmp_path):
    obs = _cells(tmp_path, "docs/results/design-obs", ["iid-n5-poisoned-dgc-s100", "iid-n5-clean-dgc-s100"])
    _run(BENCH / "history_gate_design.py", obs, "--markdown", tmp_path / "g.md")
    assert "ewma" in (tmp_path / "g.md").read_text()


def test_history_signals(tmp_path):
    obs = _cells(tmp_path, "docs/results/design-obs", ["iid-n5-poisoned-dgc-s100", "iid-n5-clean-dgc-s100"])
    _run(BENCH / "history_signals.py", obs, "--markdown", tmp_path / "h.md")
    row = next(x for x in (tmp_path / "h.md").read_text().splitlines() if x.startswith("| iid-n5-poisoned-dgc-s100"))
    assert row.count(" / ") == 3 and "clean" not in (tmp_path / "h.md").read_text()  # poisoned cells only


def test_compare_cells():
    out = _run(BENCH / "compare_cells.py", "docs/results/grid-history/cells", "docs/results/grid-history/cells",
               "--glob", "iid-n5-*-dgc-s0")
    assert "iid-n5-poisoned-dgc-s0" in out


def test_grid_cost():
    assert "client calls" in _run(BENCH / "grid_cost.py", "docs/results/grid-history/cells", "--seed", "0")


def test_reference_table(tmp_path):
    _run(BENCH / "reference_table.py", tmp_path / "ref", "docs/results/reference-seeds012")
    assert any((tmp_path / "ref").iterdir())


def test_cifar_subset(tiny_data_root, tmp_path):
    import numpy as np

    _run(BENCH / "cifar_subset.py", tiny_data_root, tmp_path / "sub", 200, 50)
    assert len(np.load(tmp_path / "sub" / "cifar10" / "train.npz")["y"]) == 200


def _env(tiny) -> dict:
    """The tiny dataset and the session's tiny cache (where a benchmark reads no override), one torch thread (two
    spin against each other on a loaded 2-core machine)."""
    return {"FL_MDISC_DATA": str(tiny[0]), "FL_MDISC_CACHE": str(tiny[1]), "OMP_NUM_THREADS": "1"}


def test_md_aware_poison(tiny, tmp_path):
    data, cache, _ = tiny
    out = _run(BENCH / "md_aware_poison.py", "betas=0,1", "batch=20", *tiny_overrides(data, cache, tmp_path / "o"),
               env=_env(tiny))
    rows = [x.split() for x in out.splitlines() if x.startswith(("paper ", "input "))]
    assert [(r[0], float(r[1])) for r in rows] == [("paper", 0), ("paper", 1), ("input", 0), ("input", 1)]
    mds = [float(v) for r in rows for v in r[2:]]
    assert len(mds) == 12 and all(math.isfinite(v) and v >= 0 for v in mds)
    assert rows[0][2:] == rows[2][2:]  # beta = 0: both forms craft the same poison


def test_other_machine(tiny, tmp_path):
    data, cache, _ = tiny
    env = {**_env(tiny), "STRATS": "dgc_paper", "ATTACKS": "lambda_update", "EVAL_EVERY": "1"}
    # C and P_t given (the calibration's simulated federation would cost most of the budget; its own tests cover it)
    _run(BENCH / "other_machine.py", "0", 3, tmp_path / "om.json",
         *tiny_overrides(data, cache, tmp_path / "o", "server_threads=1", "strategy.probe_size=100",
                         "strategy.clip_norm=1.0", "strategy.mu=0.01", "strategy.tau=0"), env=env)
    doc = json.loads((tmp_path / "om.json").read_text())
    assert doc["rounds"] == 3 and doc["machine"]["torch"]
    (c,) = doc["cells"]
    assert (c["strategy"], c["attack"], len(c["accuracy"])) == ("dgc_paper", "lambda_update", 3)
    assert 0 <= c["mean_accuracy"] <= 100 and set(c["dgc"]) == {"honest_flagged", "recall", "precision"}
    assert 0 <= c["dgc"]["honest_flagged"] <= 1


def test_cuda_determinism_on_the_cpu(tmp_path):
    _run(BENCH / "cuda_determinism.py", "--device", "cpu", "--steps", 2, "--width", 4, "--batch", 2,
         "--modes", "det,det1", "--out", tmp_path, env={"OMP_NUM_THREADS": "1"})
    res = json.loads((tmp_path / "cuda_determinism.json").read_text())
    assert set(res) == {"det", "det1"}
    for r in res.values():  # on the CPU the same maths repeats bit for bit, in one process and across two
        assert r["device"] == "cpu" and len(r["hashes"]) == 2 and len(r["seconds_per_step"]) == 2
        assert r["repeat_bit_identical"] and r["first_differing_step"] is None
        assert r["max_abs_diff_between_repeats"] == 0 and all(math.isfinite(m) for m in r["md_last"])
    table = [x for x in (tmp_path / "cuda_determinism.md").read_text().splitlines() if x.startswith("| det")]
    assert len(table) == 2 and all(x.count("|") == 8 for x in table)


def _scale_rounds():
    spec = importlib.util.spec_from_file_location("benchmarks_scale_rounds", BENCH / "scale_rounds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scale_rounds_overrides_compose_today():
    """The 100- and 1,000-client runs of scale_rounds.py are too long for the suite: what breaks them first when the
    code moves on is an override that no longer composes (a retired or renamed key)."""
    from fl_mdisc.config import compose

    mod = _scale_rounds()
    runs = mod.runs(20, [])
    assert [k for k, _, _ in runs] == mod.RUNS == ["n10", "n100", "n100_again", "n1000", "n10_again"]
    sizes = {}
    for key, _folder, over in runs:
        cfg = compose([*mod.FIXED, *over])
        sizes[key] = (int(cfg.fed.num_clients), cfg.fed.clients_per_round, int(cfg.fed.num_malicious), cfg.num_rounds)
    assert sizes == {"n10": (10, None, 1, 20), "n100": (100, 10, 10, 20), "n100_again": (100, 10, 10, 20),
                     "n1000": (1000, 10, 100, 5), "n10_again": (10, None, 1, 20)}
    with pytest.raises(SystemExit):
        mod.parse(["out", "2", "--runs", "n10,n20"])


@pytest.mark.slow
def test_scale_rounds_runs_its_10_client_pair_at_toy_size(tiny_data_root, tmp_path):
    """Its 10-client run twice (``--runs n10,n10_again``, 2 rounds, the tiny data and model), through its command
    line: both runs are whole Flower simulations, timed from timing.jsonl, and bit-identical."""
    tiny = tiny_overrides(tiny_data_root, tmp_path / "cache", tmp_path / "unused")
    extra = [o for o in tiny if not o.startswith(("out_dir=", "num_rounds=", "eval_every=", "fed.num_clients="))]
    _run(BENCH / "scale_rounds.py", tmp_path / "scale", 2, "--runs", "n10,n10_again", *extra)
    res = json.loads((tmp_path / "scale" / "scale.json").read_text())
    assert set(res) == {"n10", "n10_again", "n10_identical"} and res["n10_identical"] is True
    for r in (res["n10"], res["n10_again"]):
        assert r["rounds"] == 3 and r["median_round_s"] > 0 and r["wall_s"] >= r["sum_rounds_s"]  # 2 + trigger
        assert "fed.num_clients=10" in r["overrides"] and "num_rounds=2" in r["overrides"]
    md = (tmp_path / "scale" / "scale.md").read_text()
    assert md.count("| n10") == 2 and "n10 metrics.jsonl bit-identical over two runs: True" in md


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_project_names_a_benchmark_imports_exist(script):
    tree = ast.parse((BENCH / script).read_text())
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            mod = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(mod, a.name)
                        and not (hasattr(mod, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
    assert not missing, f"{script} imports names the project no longer has: {missing}"


def test_every_benchmark_is_listed_and_has_a_smoke_test():
    """benchmarks/ keeps the maintained benchmarks only: each is in docs/design.md's table, and a test runs it (here,
    or deployment_faults.py in tests/test_e2e_deployment.py)."""
    import re

    rows = [x.split("|")[1] for x in (ROOT / "docs/design.md").read_text().splitlines() if x.startswith("| `")]
    listed = {name for x in rows for name in re.findall(r"`(\w+\.(?:py|sh))`", x)}
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh") and not p.name.startswith("_")}
    assert listed == scripts, f"docs/design.md lists {sorted(listed - scripts)}, misses {sorted(scripts - listed)}"
    tests = Path(__file__).read_text() + (ROOT / "tests/test_e2e_deployment.py").read_text()
    untested = [s for s in scripts if s.endswith(".py") and f'BENCH / "{s}"' not in tests
                and f"from {s.removesuffix('.py')} import" not in tests]
    assert not untested, f"no test runs {untested}"
