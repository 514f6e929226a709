"""In-process Flower simulations (Ray) of the whole path on generated data: a few rounds, a tiny model."""

import json

import pytest
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from omegaconf import OmegaConf

from clients.client_app import app as client_app
from fl_mdisc.config import compose, resolve_paths
from strategies import server_app

from .conftest import tiny_overrides

pytestmark = pytest.mark.slow


def simulate(overrides, num_clients=3):
    cfg = compose(overrides)
    resolve_paths(cfg)
    out = cfg.out_dir
    path = f"{out}/config.yaml"
    import pathlib

    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text(OmegaConf.to_yaml(cfg))
    sapp = ServerApp()

    @sapp.main()
    def _main(grid: Grid, context: Context) -> None:
        server_app.run(grid, {"config-file": path})

    run_simulation(server_app=sapp, client_app=client_app, num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}})
    return cfg


def rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_data_root):
    base = tmp_path_factory.mktemp("sim")
    return tiny_data_root, base / "cache", base


def test_dgc_run_end_to_end_and_deterministic(dirs):
    data, cache, base = dirs
    ov = ["strategy=dgc", "attack=lambda_update", "attack.lam=50"]
    simulate(tiny_overrides(data, cache, base / "a", *ov))
    m = rows(base / "a" / "metrics.jsonl")
    assert [r["round"] for r in m] == [0, 1, 2, 3, 4] and m[-1]["phase"] == "trigger"
    assert all(0 <= r["accuracy"] <= 100 for r in m)
    rr = rows(base / "a" / "rounds.jsonl")
    assert len(rr) == 4
    cl = rr[0]["clients"]
    assert [c["partition-id"] for c in cl] == [0, 1, 2] and cl[2]["malicious"] and not cl[0]["malicious"]
    assert all({"md", "P", "bound", "factor", "flagged", "norm"} <= set(c) for c in cl)
    assert (base / "a" / "config.yaml").exists() and (base / "a" / "summary.json").exists()
    # the same config and seed give bit-identical metrics
    simulate(tiny_overrides(data, cache, base / "b", *ov))
    assert (base / "a" / "metrics.jsonl").read_bytes() == (base / "b" / "metrics.jsonl").read_bytes()
    assert (base / "a" / "rounds.jsonl").read_bytes() == (base / "b" / "rounds.jsonl").read_bytes()


def test_omniscient_attacker_reaches_the_defences(dirs):
    """attack=mimic through real Flower messages: the server-side adversary step replaces the attacker's reply with
    a copy of the first honest update of the round, which GC then sees (same norm as client 0)."""
    data, cache, base = dirs
    simulate(tiny_overrides(data, cache, base / "mimic", "strategy=gc", "strategy.clip_norm=1e6", "attack=mimic",
                            "trigger=false", "num_rounds=2"))
    for r in rows(base / "mimic" / "rounds.jsonl"):
        cl = {c["partition-id"]: c for c in r["clients"]}
        assert cl[2]["malicious"] and not cl[0]["malicious"]
        assert cl[2]["norm"] == pytest.approx(cl[0]["norm"], rel=1e-5) and cl[2]["norm"] != cl[1]["norm"]


def test_resume_equals_uninterrupted(dirs):
    """A run stopped after round 2 and resumed gives the uninterrupted run's files byte for byte: the clients' DSC
    state and DGC's history gate (it remembers every client's score) included. FLDetector's memory uses the same
    checkpoint path; its state round trip is in test_fldetector.py."""
    data, cache, base = dirs
    ov = ["strategy=dgc", "attack=lambda_update", "attack.lam=50", "defense=dsc", "num_rounds=4", "fed.num_clients=4"]
    simulate(tiny_overrides(data, cache, base / "full", *ov), num_clients=4)
    simulate(tiny_overrides(data, cache, base / "part", *ov, "stop_after=2"), num_clients=4)
    assert [r["round"] for r in rows(base / "part" / "metrics.jsonl")] == [0, 1, 2]
    simulate(tiny_overrides(data, cache, base / "part", *ov), num_clients=4)  # rerun = resume from round 2
    for f in ("metrics.jsonl", "rounds.jsonl"):
        assert (base / "full" / f).read_bytes() == (base / "part" / f).read_bytes()
    rr = rows(base / "full" / "rounds.jsonl")
    assert any(c.get("score") is not None for r in rr[2:] for c in r["clients"])  # the gate's memory is in use
    s = json.loads((base / "full" / "summary.json").read_text())
    assert s["dsc_corrected_samples"] >= 0 and "accuracy_after_trigger" in s


def test_nan_attacker_is_dropped_and_counted(dirs):
    data, cache, base = dirs
    simulate(tiny_overrides(data, cache, base / "nan", "strategy=st", "attack=nan", "trigger=false"))
    s = json.loads((base / "nan" / "summary.json").read_text())
    assert s["dropped_replies"] == 3  # one per round
    rr = rows(base / "nan" / "rounds.jsonl")
    assert rr[0]["dropped"] == [{"partition-id": 2, "reason": "non-finite values (NaN/Inf)"}]
    import math

    assert all(math.isfinite(r["accuracy"]) for r in rows(base / "nan" / "metrics.jsonl"))


def test_failing_client_does_not_stop_the_run(dirs):
    data, cache, base = dirs
    simulate(tiny_overrides(data, cache, base / "crash", "strategy=gc", "attack=crash", "trigger=false"))
    s = json.loads((base / "crash" / "summary.json").read_text())
    assert s["failures"] == 3 and s["unchanged_rounds"] == 0
    rr = rows(base / "crash" / "rounds.jsonl")
    assert [c["partition-id"] for c in rr[0]["clients"] if "norm" in c] == [0, 1]
    # a failure is logged once, under the crashed client's partition, with the error's own reason; never as dropped
    assert rr[0]["dropped"] == [] and s["dropped_replies"] == 0
    assert [f["partition-id"] for f in rr[0]["failed"]] == [2] and rr[0]["failed"][0]["reason"]


def test_round_where_every_client_fails_leaves_model_unchanged(dirs):
    data, cache, base = dirs
    simulate(tiny_overrides(data, cache, base / "allfail", "protocol=harness", "strategy=gc", "attack=crash",
                            "trigger=false"),
             num_clients=1)
    m = rows(base / "allfail" / "metrics.jsonl")
    assert len({r["accuracy"] for r in m}) == 1 and len({r["test_loss"] for r in m}) == 1
    s = json.loads((base / "allfail" / "summary.json").read_text())
    assert s["unchanged_rounds"] == 3 and s["failures"] == 3


def test_partial_participation_binds_replies_to_senders(dirs):
    """K of N drawn reproducibly; a client claiming another's partition id is dropped and counted (real Flower
    messages: the server learnt node id -> partition id with the ClientApp's query at start)."""
    from fl_mdisc.sampling import sample_round

    data, cache, base = dirs
    out = base / "spoof"
    simulate(tiny_overrides(data, cache, out, "strategy=st", "attack=spoof", "attack.claim=0", "fed.num_clients=4",
                            "fed.clients_per_round=3", "trigger=false", "num_rounds=4", "fed.batch_size=40"),
             num_clients=4)
    rr = rows(out / "rounds.jsonl")
    assert [r["sampled"] for r in rr] == [list(sample_round(0, r, 4, 3)) for r in range(1, 5)]
    for r in rr:
        attacker_in = 3 in r["sampled"]
        assert [d["partition-id"] for d in r["dropped"]] == ([3] if attacker_in else [])
        assert all(d.get("spoofed") for d in r["dropped"])
        assert [c["partition-id"] for c in r["clients"]] == r["sampled"]  # the spoofer is logged as itself
        assert all(c["malicious"] == (c["partition-id"] == 3) for c in r["clients"])
    s = json.loads((out / "summary.json").read_text())
    assert s["spoofed_replies"] == sum(3 in r["sampled"] for r in rr) > 0


def test_cells_grouped_in_one_run_give_the_numbers_they_give_alone(dirs):
    """The sweep commands run the cells of one federation in one flwr run (``config-files``)."""
    data, cache, base = dirs
    paths = []
    for name, ov in (("g1", ["strategy=dgc", "attack=lambda_update", "attack.lam=50"]), ("g2", ["strategy=gc", "attack=none"])):
        cfg = compose(tiny_overrides(data, cache, base / name, *ov))
        resolve_paths(cfg)
        (base / name).mkdir(parents=True, exist_ok=True)
        (base / name / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        paths.append(str(base / name / "config.yaml"))
    sapp = ServerApp()

    @sapp.main()
    def _main(grid: Grid, context: Context) -> None:
        server_app.run_many(grid, {"config-files": ";".join(paths)})

    run_simulation(server_app=sapp, client_app=client_app, num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}})
    assert all((base / n / "summary.json").is_file() for n in ("g1", "g2"))
    simulate(tiny_overrides(data, cache, base / "g2-alone", "strategy=gc", "attack=none"))
    assert (base / "g2" / "metrics.jsonl").read_bytes() == (base / "g2-alone" / "metrics.jsonl").read_bytes()
    assert (base / "g2" / "rounds.jsonl").read_bytes() == (base / "g2-alone" / "rounds.jsonl").read_bytes()


