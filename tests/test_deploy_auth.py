"""Who may join a Deployment Engine federation (issue 28): a SuperLink started as `engine=deployment` starts it
(TLS, SuperNode authentication on), a SuperNode whose key was registered connects under its registered node id,
keeps it when it restarts with its key, and a SuperNode with an unregistered key is refused; nothing is left behind."""

import json
import subprocess
import time

import pytest

from app import launch
from app.pki import federation_keys

pytestmark = pytest.mark.slow


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
