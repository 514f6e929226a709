"""How `run_flwr` follows a run: one idle `flwr log --stream`, one `flwr list` when it ends (no polling loop).

Polling `flwr list` every 2 s cost ~1 s of CPU per call and slowed every client of a 2-core sweep (measured by
benchmarks/flwr_poll_cost.py, retired; at commit ee1e392); these tests pin the cheap behaviour with fake flwr
commands (no SuperLink, no Ray).
"""

import json
import subprocess

import pytest

from app import launch


class _Fake:
    def __init__(self, statuses, log_waits=0):
        self.calls, self.statuses, self.log_waits = [], list(statuses), log_waits

    def run(self, cmd, **kw):
        self.calls.append(cmd[1] if cmd[0].endswith("flwr") else cmd[0])
        if cmd[0].endswith("flwr") and cmd[1] == "run":
            self.run_env, self.run_cmd = kw.get("env"), cmd
            return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"run-id": 7}), stderr="")
        if cmd[0].endswith("flwr") and cmd[1] == "list":
            status = self.statuses.pop(0)
            return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"runs": [{"status": status}]}), stderr="")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")  # ps

    def popen(self, cmd, **kw):
        self.calls.append(cmd[1])
        fake = self

        class P:
            waits = fake.log_waits

            def wait(self, timeout=None):
                if P.waits > 0:
                    P.waits -= 1
                    raise subprocess.TimeoutExpired(cmd, timeout)
                return 0

            def poll(self):
                return 0

        return P()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    def install(statuses, log_waits=0):
        f = _Fake(statuses, log_waits)
        monkeypatch.setattr(launch.subprocess, "run", f.run)
        monkeypatch.setattr(launch.subprocess, "Popen", f.popen)
        monkeypatch.setattr(launch.time, "sleep", lambda s: None)
        monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
        return f
    return install


def _flwr_calls(f):
    return [c for c in f.calls if c in ("run", "log", "list")]


def test_one_status_query_when_the_log_stream_ends(fake, tmp_path):
    f = fake(["finished:completed"])
    out = launch.run_flwr(tmp_path, tmp_path / "c.yaml", 2, stream=False)
    assert out["status"] == "finished:completed" and out["run_id"] == 7
    assert _flwr_calls(f) == ["run", "log", "list"]


def test_progress_is_printed_while_waiting_without_polling_flwr(fake, tmp_path, capsys):
    f = fake(["finished:completed"], log_waits=3)
    launch.run_flwr(tmp_path, tmp_path / "c.yaml", 2, stream=False, progress=lambda: "cell 1/1 round 5/10")
    assert capsys.readouterr().out.count("cell 1/1 round 5/10") == 3
    assert _flwr_calls(f) == ["run", "log", "list"]


def test_a_dropped_log_stream_is_followed_again(fake, tmp_path):
    f = fake(["running", "finished:failed"])
    out = launch.run_flwr(tmp_path, tmp_path / "c.yaml", 2, stream=False)
    assert out["status"] == "finished:failed"
    assert _flwr_calls(f) == ["run", "log", "list", "log", "list"]


@pytest.mark.parametrize("address, expected", [("local", "local"), ("10.0.0.5:6379", "10.0.0.5:6379"),
                                               ("auto", "from-the-shell")])
def test_ray_address_reaches_the_superlink_environment(fake, tmp_path, monkeypatch, address, expected):
    """ray.address=local pins a private Ray instance even when the shell points at a cluster (a stray `ray start`);
    a host:port attaches; auto leaves Ray's own resolution. No CPU/GPU count is passed to ray.init in any mode."""
    monkeypatch.setenv("RAY_ADDRESS", "from-the-shell")
    f = fake(["finished:completed"])
    launch.run_flwr(tmp_path, tmp_path / "c.yaml", 2, stream=False, ray_address=address)
    assert f.run_env["RAY_ADDRESS"] == expected
    assert not any("init-args" in str(a) for a in f.run_cmd)


def test_bad_ray_address_is_one_clear_error():
    from fl_mdisc.config import compose
    from fl_mdisc.errors import ConfigError

    assert compose([]).ray.address == "local"
    compose(["ray.address=auto"])
    compose(["ray.address=head.example:6379"])
    for bad in ("ray.address=cluster", "ray.address=host:port", "ray.address=:6379"):
        with pytest.raises(ConfigError, match="ray.address"):
            compose([bad])


def test_deployment_commands_give_every_supernode_its_partition_and_port(tmp_path):
    from app.pki import federation_keys

    keys = federation_keys(tmp_path / "keys", 3)
    cmds = launch.deployment_commands(4567, 3, [5001, 5002, 5003], tmp_path, keys)
    link = cmds["superlink"]
    assert "--insecure" not in link and "--enable-supernode-auth" in link
    assert link[link.index("--ssl-ca-certfile") + 1] == str(keys["ca"]) and link[link.index("--port") + 1] == "4567"
    for i in range(3):
        c = cmds[f"supernode-{i}"]
        assert "--insecure" not in c and c[c.index("--root-certificates") + 1] == str(keys["ca"])
        assert c[c.index("--auth-supernode-private-key") + 1] == str(keys["nodes"][i][0])
        assert c[c.index("--superlink") + 1] == "127.0.0.1:4567" and c[c.index("--port") + 1] == str(5001 + i)
        assert c[c.index("--node-config") + 1] == f"partition-id={i} num-partitions=3"
        # process isolation: its SuperExec (ours, forking warm ClientApps) runs beside it on its Runtime API port
        assert c[c.index("--isolation") + 1] == "process"
        e = cmds[f"superexec-{i}"]
        assert e[1:3] == ["-m", "clients.warm_exec"] and e[e.index("--runtime-api-address") + 1] == f"127.0.0.1:{5001 + i}"
    assert len(cmds) == 7


def test_the_throwaway_keys_are_what_flower_reads(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
    from flwr.cli.supernode.register import try_load_public_key

    from app.pki import federation_keys

    keys = federation_keys(tmp_path, 2)
    ca = x509.load_pem_x509_certificate(keys["ca"].read_bytes())
    cert = x509.load_pem_x509_certificate(keys["cert"].read_bytes())
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    for priv, pub in keys["nodes"]:  # the formats flower-supernode and `flwr supernode register` load
        k = load_ssh_private_key(priv.read_bytes(), None)
        assert isinstance(k, ec.EllipticCurvePrivateKey) and (priv.stat().st_mode & 0o077) == 0
        assert load_ssh_public_key(pub.read_bytes()).public_numbers() == k.public_key().public_numbers()
        assert try_load_public_key(pub)
    assert keys["nodes"][0][1].read_bytes() != keys["nodes"][1][1].read_bytes()


def test_unknown_engine_is_one_clear_error(tmp_path):
    from fl_mdisc.config import compose
    from fl_mdisc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown engine 'grpc'; choose one of \['simulation', 'deployment'\]"):
        compose(["engine=grpc"])
    with pytest.raises(Exception, match="unknown engine"):
        launch.run_flwr(tmp_path, tmp_path / "c.yaml", 2, engine="grpc")


def test_prepare_only_writes_the_config_and_runs_nothing(tiny_data_root, tmp_path, capsys, monkeypatch):
    from app import cli

    from .conftest import tiny_overrides

    monkeypatch.setattr(launch, "run_flwr", lambda *a, **k: pytest.fail("--prepare-only must not start a run"))
    out = tmp_path / "run"
    assert cli.main(["run", "--prepare-only", *tiny_overrides(tiny_data_root, tmp_path / "cache", out)]) == 0
    assert (out / "config.yaml").is_file() and not (out / "metrics.jsonl").exists()
    assert f"config-file='{out / 'config.yaml'}'" in capsys.readouterr().out


def test_lane_shares_split_the_cpus_and_give_each_lane_a_gpu_in_turn():
    lanes = launch.lane_shares(2, 1, num_cpus=16, gpus=["0", "1", "2"])
    assert [x["num_cpus"] for x in lanes] == [8, 8]
    assert [x["env"]["CUDA_VISIBLE_DEVICES"] for x in lanes] == ["0", "1"]
    assert launch.lane_shares(4, 2, num_cpus=2, gpus=["0"]) == [{"num_cpus": 2, "env": {}}] * 4  # one GPU: shared
    with pytest.raises(Exception, match="sweep.parallel"):
        launch.lane_shares(0)


def test_parallel_lanes_split_every_federation_so_no_lane_runs_one_alone():
    from app.tables import group_size

    assert group_size(8, 8, 1) == 8  # one lane: one flwr run per federation (up to the group cap)
    assert group_size(20, 8, 1) == 8
    assert group_size(8, 8, 2) == 4  # two lanes: each federation's 8 cells in two runs, one per lane
    assert group_size(7, 8, 2) == 4 and group_size(1, 8, 2) == 1
    assert group_size(30, 8, 3) == 8  # the cap still holds


def test_parallel_groups_mix_a_federations_clean_and_poisoned_cells():
    from app.tables import split_groups

    cells = ["clean-st", "clean-gc", "clean-dgc", "clean-mk", "poisoned-st", "poisoned-gc", "poisoned-dgc", "poisoned-mk"]
    assert split_groups(cells, 8, 1) == [cells]  # sequential: in order, as before
    assert split_groups(cells, 3, 1) == [cells[:3], cells[3:6], cells[6:]]
    two = split_groups(cells, 4, 2)
    assert two == [cells[0::2], cells[1::2]]
    assert all(sum(c.startswith("poisoned") for c in g) == 2 for g in two)  # each lane gets half of the attacked cells
    assert sorted(c for g in split_groups(cells[:7], 4, 2) for c in g) == sorted(cells[:7])  # nothing lost or repeated


def test_a_bad_sweep_parallel_is_one_clear_error():
    from fl_mdisc.config import compose
    from fl_mdisc.errors import ConfigError

    with pytest.raises(ConfigError, match="sweep.parallel"):
        compose(["sweep.parallel=0"])


def test_parallel_lanes_cap_each_cells_torch_threads_at_the_lane_share_and_record_it(tmp_path):
    """Two lanes of 2-thread processes on 2 cores oversubscribe them (an attacker call: 1.5 s alone at 1 thread,
    3.5 s at 2 threads beside another lane); the cap is written into the cell's config, which decides its numbers."""
    from omegaconf import OmegaConf

    from app.tables import cap_threads
    from fl_mdisc.config import compose

    items = []
    for name, ov in (("a", ["server_threads=2", "attacker_threads=2", "client_threads=1"]),
                     ("b", ["server_threads=1", "attacker_threads=1", "client_threads=1"])):
        cfg = compose(["preset=cpu", *ov])
        path = tmp_path / name / "config.yaml"
        path.parent.mkdir()
        path.write_text(OmegaConf.to_yaml(cfg))
        items.append((0, {"name": name}, cfg, path))
    before_b = items[1][3].read_text()
    assert cap_threads(items, 1) == 1  # only cell a had more threads than its lane's CPU
    rec = OmegaConf.load(items[0][3])
    assert (rec.server_threads, rec.attacker_threads, rec.client_threads) == (1, 1, 1)
    assert (items[0][2].server_threads, items[0][2].attacker_threads) == (1, 1)  # the config the run is given
    assert items[1][3].read_text() == before_b  # a cell within its share is left untouched
    assert cap_threads(items, 4) == 0  # a lane with more CPUs than threads caps nothing (never raises a count)


def test_the_fab_carries_the_app_not_the_committed_results():
    """Flower refuses a FAB over 10 MiB; the grid's committed cells alone pass that (~6 MB a seed), so pyproject's
    ``fab-exclude`` leaves docs/, benchmarks/ and tests/ out. What the ServerApp and ClientApp import stays in."""
    import io
    import zipfile
    from pathlib import Path

    from flwr.cli.build import build_fab_from_disk

    repo = Path(__file__).resolve().parents[1]
    fab = build_fab_from_disk(repo)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert not [n for n in names if n.split("/")[0] in ("docs", "benchmarks", "tests")]
    for needed in ("strategies/server_app.py", "clients/client_app.py", "fl_mdisc/calibration.py", "conf/config.yaml",
                   "app/launch.py"):
        assert needed in names
    assert len(fab) < 2 * 1024 * 1024


def test_user_keys_are_read_from_their_folder_and_a_missing_file_is_one_error(tmp_path):
    """``deployment.keys``: a folder laid out as the throwaway set gives the same paths; a file missing is one error
    naming it, at composition (before any burn-in or process)."""
    from app.pki import federation_keys, given_keys
    from fl_mdisc.config import compose
    from fl_mdisc.errors import ConfigError

    made = federation_keys(tmp_path / "mine", 3)
    assert given_keys(tmp_path / "mine", 3) == made
    compose(["engine=deployment", f"deployment.keys={tmp_path / 'mine'}", "fed.num_clients=3"])
    (tmp_path / "mine" / "node-2.pub").unlink()
    with pytest.raises(ConfigError, match="lacks node-2.pub"):
        compose(["engine=deployment", f"deployment.keys={tmp_path / 'mine'}", "fed.num_clients=3"])
    with pytest.raises(ConfigError, match="lacks .*node-3"):
        compose(["engine=deployment", f"deployment.keys={tmp_path / 'mine'}", "fed.num_clients=4"])
    compose(["engine=simulation", f"deployment.keys={tmp_path / 'nowhere'}"])  # only the Deployment Engine reads it
    with pytest.raises(ConfigError, match="deployment.clientapp"):
        compose(["deployment.clientapp=fresh"])


def test_marked_finds_a_process_and_its_orphaned_child_by_their_environment(tmp_path):
    """What the Deployment Engine's clean-up relies on when a SuperLink dies before its ServerApp: a process whose
    parent is gone is still found by the mark every process of the run inherits."""
    import os
    import sys
    import time

    mark = f"test-{tmp_path.name}"
    env = dict(os.environ, **{launch.MARK_ENV: mark})
    # a parent that starts a sleeping child and exits at once: the child is orphaned (re-parented to init)
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
                               "stdout=subprocess.DEVNULL).pid)"],
                              env=env, stdout=subprocess.PIPE, text=True)
    child = int(parent.communicate(timeout=30)[0])
    time.sleep(0.2)
    assert launch.marked(mark) == [child]
    launch.kill_trees(launch.marked(mark))
    assert launch.marked(mark) == [] and launch.marked("no-such-run") == []
