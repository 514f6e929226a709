"""`ray.address`: a simulation attaches to a running Ray cluster when told to, and ignores it when not.

A private two-node Ray cluster on loopback (a head and a worker node, each `ray start` with its own temp dir, so
no other Ray user of this machine can see it, and stopped by PID at the end: never `ray stop`, which kills every Ray
process on the machine). Which node a ClientApp ran on is read from the process table while the run goes: Ray starts
each actor's worker process as a child of its node's raylet, with the process title ``ray::ClientAppActor...``.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from app.launch import _process_table, kill_trees

from .conftest import tiny_overrides

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="flmr", dir="/tmp"))  # short: Ray's unix socket paths have a length limit
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    port = _free_port()

    def stop():
        mine = {os.getpid(), os.getppid()}
        kill_trees([pid for pid, _pp, args in _process_table() if str(root) in args and pid not in mine])
        shutil.rmtree(root, ignore_errors=True)

    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={root}/head",
                        "--include-dashboard=false", "--disable-usage-stats"], env=env, check=True,
                       capture_output=True, timeout=180)
        address = (root / "head" / "ray_current_cluster").read_text().strip()
        subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=1", f"--temp-dir={root}/worker",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=180)
        raylets = {pid for pid, _pp, args in _process_table() if str(root) in args and "/raylet/raylet " in args}
        assert len(raylets) == 2, "the two-node cluster did not start"
        yield address, raylets
    finally:
        stop()


def _run_watching(data_root, tmp_path, extra, env_extra):
    """Run the tiny federation; return the parents (raylets) of every ClientApp actor seen while it ran."""
    parents, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            parents.update(pp for _pid, pp, args in _process_table() if args.startswith("ray::ClientAppActor"))
            time.sleep(0.3)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ov = tiny_overrides(data_root, tmp_path / "cache", tmp_path / "run", "num_rounds=1", "strategy=gc",
                        "attack=none", *extra)
    try:
        r = subprocess.run([sys.executable, "-m", "app.cli", "run", "--quiet", *ov], capture_output=True, text=True,
                           timeout=600, env=dict(os.environ, **env_extra))
    finally:
        done.set()
        t.join()
    assert r.returncode == 0 and "finished:completed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    return parents


def test_simulation_attaches_to_the_cluster_and_uses_both_nodes(cluster, tiny_data_root, tmp_path):
    address, raylets = cluster
    parents = _run_watching(tiny_data_root, tmp_path, [f"ray.address={address}"], {})
    assert raylets <= parents  # a ClientApp actor on the head node and one on the worker node


def test_local_ignores_a_running_cluster(cluster, tiny_data_root, tmp_path):
    address, raylets = cluster
    # even with RAY_ADDRESS pointing at the cluster (a shell that once attached to it), the default stays private
    parents = _run_watching(tiny_data_root, tmp_path, [], {"RAY_ADDRESS": address})
    assert parents and not (parents & raylets)
