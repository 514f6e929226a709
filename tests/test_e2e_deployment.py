"""The Deployment Engine end to end on loopback (a SuperLink + SuperNodes as processes, TLS and SuperNode
authentication): the same numbers as the simulation, a SuperLink killed mid-run, a hung client, a node that claims
another partition, a SuperNode killed and restarted, who may join; nothing of a run is left behind.

Every test that starts Deployment Engine processes is in this file: `make test` runs the suite on two pytest-xdist
workers with ``--dist loadfile`` (one file per worker at a time), so these run one after another, and their checks
that no SuperNode or ClientApp is left read the whole machine's process table."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import launch
from app.pki import federation_keys

from .conftest import REPO, tiny_overrides
from .e2e import ARGS, _flower_pids, _jsonl, _run, simulated  # noqa: F401 (simulated: a fixture)

pytestmark = pytest.mark.slow


def _kill_superlink_after_round_1(data_root, tmp_path, name, *extra) -> tuple[int, str]:
    """Start the run; SIGKILL its SuperLink once round 1 is logged; return the command's exit code and output."""
    out = tmp_path / name
    log = tmp_path / f"{name}.log"
    ov = tiny_overrides(data_root, tmp_path / "cache", out, *ARGS, *extra)
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--quiet", *ov], stdout=fh, stderr=subprocess.STDOUT)
    killed, t0 = False, time.time()
    while p.poll() is None and time.time() - t0 < 600:
        if not killed and (out / "rounds.jsonl").is_file() and (out / "rounds.jsonl").read_text().count("\n") >= 1:
            for pid in _flower_pids("flower-superlink"):
                if f"run-{p.pid}" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(int(pid), signal.SIGKILL)
                    killed = True
        time.sleep(0.2)
    p.wait(timeout=120)
    assert killed, log.read_text()[-2000:]
    return p.returncode, log.read_text()


def test_deployment_engine_survives_a_superlink_kill_and_gives_the_simulation_numbers(simulated, tiny_data_root):
    """The SuperLink is killed once round 1 is logged: the command fails, says to rerun it, and leaves nothing
    behind; the same command again resumes from the checkpoint, and the run's files equal the simulation's."""
    tmp, sim_out, _pid, _err = simulated
    before = _flower_pids("flower-supernode", "flwr-clientapp", "clients.warm_exec", "flwr-serverapp")
    code, text = _kill_superlink_after_round_1(tiny_data_root, tmp, "deploy", "engine=deployment")
    assert code != 0 and "rerun the same command" in text, text[-2000:]
    time.sleep(3)  # the SuperLink's SuperExec and ServerApp follow it (Flower's parent-process monitor)
    left = _flower_pids("flower-supernode", "flwr-clientapp", "clients.warm_exec", "flwr-serverapp") - before
    assert not left, subprocess.run(["ps", "-ww", "-o", "pid,ppid,etime,args", "-p", ",".join(left)],
                                    capture_output=True, text=True).stdout
    out, pid, stderr = _run(tiny_data_root, tmp, "deploy", "engine=deployment")
    # the same files as a simulation run, with the same numbers (only the wall-clock fields differ)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in sim_out.iterdir())
    assert _jsonl(out / "metrics.jsonl") == _jsonl(sim_out / "metrics.jsonl")
    assert _jsonl(out / "rounds.jsonl", drop=("seconds",)) == _jsonl(sim_out / "rounds.jsonl", drop=("seconds",))
    s_dep, s_sim = (json.loads((d / "summary.json").read_text()) for d in (out, sim_out))
    clock = ("wall_s", "startup_s")
    assert {k: v for k, v in s_dep.items() if k not in clock} == {k: v for k, v in s_sim.items() if k not in clock}
    # no SuperLink (its database is in the private home), SuperNode or ClientApp of this run survives
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"run-{pid}" not in ps, stderr[-3000:]
    assert _flower_pids("flower-supernode", "flwr-clientapp") <= before
    assert not (REPO / ".flwr-home" / f"run-{pid}").exists()


def test_deployment_hung_client_and_node_claiming_another_partition(tiny_data_root, tmp_path, monkeypatch):
    """Faults on loopback, one run: partition 2's ClientApp hangs from round 3 on (``attack=hang``), and the node
    whose key is registered for partition 1 says ``partition-id=0`` in its node config. The hung client costs each
    round exactly the wait in force (the 20 s ceiling: fewer than 3 complete rounds are measured) and counts as
    missing; node 1's replies are dropped as spoofed and counted every round, partition 0's accepted; nothing of
    the run (SuperLink, SuperNodes, SuperExecs, hung ClientApps) is left behind."""
    from app import launch
    from app.cli import main

    real = launch.deployment_commands

    def claiming(*a, **kw):
        cmds = real(*a, **kw)
        c = cmds["supernode-1"]
        c[c.index("--node-config") + 1] = c[c.index("--node-config") + 1].replace("partition-id=1", "partition-id=0")
        return cmds

    monkeypatch.setattr(launch, "deployment_commands", claiming)
    before = _flower_pids("flower-supernode", "flwr-clientapp", "clients.warm_exec")
    out = tmp_path / "faults"
    ov = tiny_overrides(tiny_data_root, tmp_path / "cache", out, "engine=deployment", "strategy=gc", "attack=hang",
                        "attack.from_round=3", "num_rounds=4", "trigger=false", "fed.round_timeout=20")
    assert main(["run", "--quiet", *ov]) == 0
    rows, timing = _jsonl(out / "rounds.jsonl"), _jsonl(out / "timing.jsonl")
    for r in rows:
        assert [d["partition-id"] for d in r["dropped"]] == [1] and r["dropped"][0]["spoofed"]
        assert "claims partition 0 but its node is partition 1" in r["dropped"][0]["reason"]
        assert 0 in [c["partition-id"] for c in r["clients"]]
        assert r["missing"] == (1 if r["round"] >= 3 else 0)
    for t in timing:
        assert t["timeout"] == 20.0
        if t["round"] >= 3:
            assert 20.0 <= t["seconds"] < 20.0 + 5.0, timing
    s = json.loads((out / "summary.json").read_text())
    assert (s["spoofed_replies"], s["missing_replies"], s["failures"]) == (4, 2, 0)
    assert _flower_pids("flower-supernode", "flwr-clientapp", "clients.warm_exec") <= before
    assert not any((REPO / ".flwr-home").glob(f"run-{__import__('os').getpid()}*"))


def test_deployment_supernode_killed_and_restarted_rejoins(tmp_path):
    """SuperNode 1 stopped after round 2 (SIGTERM, then SIGKILL), restarted with its key and its SuperExec once its
    partition is skipped (``benchmarks/deployment_faults.py``, which also writes docs/results/deployment-faults).
    Its message of the round it died in, if one was sent, comes back as one failure of partition 1 with Flower's
    reason, never as a dropped reply; while the SuperLink does not list it, it is not sent anything; restarted, it
    replies as partition 1 in every later round; nothing of the run is left."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from deployment_faults import run_faults

    r = run_faults(tmp_path)
    assert r["code"] == 0 and not r["left"], r["events"]
    rows = r["rows"]
    failed = [(row["round"], f) for row in rows for f in row.get("failed", [])]
    assert len(failed) <= 1 and all(f["partition-id"] == 1 and "Unavailable" in f["reason"] for _r, f in failed)
    skipped = [row["round"] for row in rows if 1 in row.get("unavailable", [])]
    assert skipped, rows
    for row in rows:
        replied = [c["partition-id"] for c in row["clients"]]
        if row["round"] in skipped:
            assert 1 not in row["sampled"] and replied == [0, 2]
        if row["round"] > max(skipped):
            assert replied == [0, 1, 2]
    assert max(skipped) < 9 and all(not row["dropped"] for row in rows)
    s = r["summary"]
    assert (s["failures"], s["dropped_replies"], s["missing_replies"]) == (len(failed), 0, 0)


def _online(flwr, env, cwd) -> set[int]:
    r = subprocess.run([flwr, "supernode", "ls", launch.CONNECTION, "--format", "json"], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    return {int(n["node-id"]) for n in json.loads(r.stdout)["nodes"] if n["status"] == "online"}


def _wait(cond, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(1.0)
    return False


def test_only_registered_supernodes_join_and_keep_their_node_id(tmp_path):
    env = launch.flwr_env(launch.Path(launch.__file__).resolve().parents[1], None, private=True)
    home, flwr = launch.Path(env["FLWR_HOME"]), launch._flwr_bin()
    keys = federation_keys(home / "keys", 2)  # node 0 registered, node 1 never
    port, node_ports = launch._free_port(), [launch._free_port(), launch._free_port()]
    cmds = launch.deployment_commands(port, 2, node_ports, home, keys)
    procs = []
    try:
        link, log = launch._popen_logged("superlink", cmds["superlink"], home, env)
        procs.append(link)
        launch._wait_healthy(port, link, log, ca=keys["ca"])
        cli = home / "cli"
        cli.mkdir()
        (cli / "config.toml").write_text(f'[superlink]\ndefault = "{launch.CONNECTION}"\n\n[superlink.{launch.CONNECTION}]\n'
                                         f'address = "127.0.0.1:{port}"\nroot-certificates = "{keys["ca"]}"\n')
        cenv = dict(env, FLWR_HOME=str(cli))
        keys_one = dict(keys, nodes=keys["nodes"][:1])
        (node_id,) = launch.register_nodes(flwr, keys_one, cenv, str(cli))
        good, _ = launch._popen_logged("supernode-0", cmds["supernode-0"], home, env)
        bad, bad_log = launch._popen_logged("supernode-1", cmds["supernode-1"], home, env)
        procs += [good, bad]
        assert _wait(lambda: _online(flwr, cenv, str(cli)) == {node_id})
        assert _wait(lambda: bad.poll() is not None), bad_log.read_text()[-1500:]  # refused: it gives up
        assert _online(flwr, cenv, str(cli)) == {node_id}
        launch.kill_trees([good.pid])  # killed, restarted with its key: the same node id
        good.wait(timeout=30)
        again, _ = launch._popen_logged("supernode-0", cmds["supernode-0"], home, env)
        procs.append(again)
        assert _wait(lambda: node_id in _online(flwr, cenv, str(cli)))
    finally:
        launch.kill_trees([p.pid for p in procs])
        launch.prune_flwr_home(env)
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(home) not in ps
