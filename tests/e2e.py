"""What the two end-to-end test files share: a real `fl-mdisc run` through `flwr run` on the generated data, and the
run every module compares against (the Simulation Runtime on Ray, DGC + accumulative attacker + DSC, 3 rounds)."""

import json
import subprocess
import sys

import pytest

from .conftest import tiny_overrides

ARGS = ("strategy=dgc", "attack=accumulative", "defense=dsc", "num_rounds=3")


def _run(data_root, tmp_path, name, *extra):
    out = tmp_path / name
    ov = tiny_overrides(data_root, tmp_path / "cache", out, *ARGS, *extra)
    p = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--quiet", *ov], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    stdout, stderr = p.communicate(timeout=900)
    assert p.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "finished:completed" in stdout
    return out, p.pid, stderr


def _jsonl(path, drop=()):
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _flower_pids(*names):
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line.split(None, 1)[0] for line in ps.splitlines()[1:] if any(n in line for n in names)}


@pytest.fixture(scope="module")
def simulated(tiny_data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    return tmp, *_run(tiny_data_root, tmp, "sim")
