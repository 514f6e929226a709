"""One real `fl-mdisc run` through `flwr run` (SuperLink + Simulation Runtime on Ray) on generated data."""

import json
import subprocess
import sys

import pytest

from .conftest import tiny_overrides

pytestmark = pytest.mark.slow


def test_cli_flwr_run_completes_and_cleans_up(tiny_data_root, tmp_path):
    out = tmp_path / "run"
    ov = tiny_overrides(tiny_data_root, tmp_path / "cache", out, "strategy=dgc", "attack=accumulative",
                        "defense=dsc", "num_rounds=2")
    p = subprocess.run([sys.executable, "-m", "fl_mdisc.cli", "run", "--quiet", *ov], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "finished:completed" in p.stdout
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert (out / "config.yaml").exists() and json.loads((out / "summary.json").read_text())["strategy"] == "dgc"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "flower-superlink" not in ps and "flwr-simulation" not in ps, p.stderr[-3000:]
