"""Real `fl-mdisc run`s through `flwr run` on generated data, on the Simulation Runtime (Ray): a run completes and
leaves no process behind, and cells of a parallel sweep give the numbers they give alone. The Deployment Engine's
end-to-end tests are in test_e2e_deployment.py."""

import json
import subprocess

import pytest

from .conftest import REPO, tiny_overrides
from .e2e import ARGS, _jsonl, simulated  # noqa: F401 (simulated: a fixture)

pytestmark = pytest.mark.slow


def test_cli_flwr_run_completes_and_cleans_up(simulated):
    _tmp, out, pid, stderr = simulated
    rows = _jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]  # 3 rounds + the trigger round
    assert (out / "config.yaml").exists() and json.loads((out / "summary.json").read_text())["strategy"] == "dgc"
    # the run had a private FLWR_HOME (.flwr-home/run-<pid>): nothing of it may survive, and the folder is gone
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"run-{pid}" not in ps, stderr[-3000:]
    assert not (REPO / ".flwr-home" / f"run-{pid}").exists()


def test_parallel_sweep_cells_equal_the_sequential_ones(simulated, tiny_data_root, capsys):
    """``sweep.parallel=2``: two groups at once, each its own SuperLink and a private Ray with half the CPUs; a cell
    gives the numbers it gives when run alone with the same torch threads (one each here, so that no lane's thread
    cap applies: tests/test_launch.py checks the cap, which is written into the cell's config)."""
    from app.tables import run_cells

    tmp, _sim_out, _pid, _err = simulated
    threads = ["server_threads=1", "client_threads=1", "attacker_threads=1"]
    cells = []
    for name, extra in (("a", ARGS), ("b", ("strategy=gc", "attack=none", "num_rounds=3"))):
        ov = [o for o in tiny_overrides(tiny_data_root, tmp / "cache", tmp / "x", *extra) if not o.startswith("out_dir=")]
        cells.append({"name": name, "overrides": [*ov, *threads, "sweep.parallel=2"], "out_dir": str(tmp / "par" / name)})
    alone = {**cells[0], "overrides": cells[0]["overrides"][:-1], "out_dir": str(tmp / "alone" / "a")}
    run_cells([alone])
    run_cells(cells)
    assert "2 groups on 2 lanes at once" in capsys.readouterr().out
    a, b, sim_out = tmp / "par" / "a", tmp / "par" / "b", tmp / "alone" / "a"
    assert (b / "summary.json").is_file()
    assert _jsonl(a / "metrics.jsonl") == _jsonl(sim_out / "metrics.jsonl")
    assert _jsonl(a / "rounds.jsonl") == _jsonl(sim_out / "rounds.jsonl")
