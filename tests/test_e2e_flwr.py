"""One real `fl-mdisc run` through `flwr run` (SuperLink + Simulation Runtime on Ray) on generated data."""

import json
import subprocess
import sys

import pytest

from .conftest import REPO, tiny_overrides

pytestmark = pytest.mark.slow


def test_cli_flwr_run_completes_and_cleans_up(tiny_data_root, tmp_path):
    out = tmp_path / "run"
    ov = tiny_overrides(tiny_data_root, tmp_path / "cache", out, "strategy=dgc", "attack=accumulative",
                        "defense=dsc", "num_rounds=2")
    p = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--quiet", *ov], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "finished:completed" in stdout
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert (out / "config.yaml").exists() and json.loads((out / "summary.json").read_text())["strategy"] == "dgc"
    # the run had a private FLWR_HOME (.flwr-home/run-<pid>): nothing of it may survive, and the folder is gone
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"run-{p.pid}" not in ps, stderr[-3000:]
    assert not (REPO / ".flwr-home" / f"run-{p.pid}").exists()
