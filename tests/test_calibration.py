"""Self-calibration (fl_mdisc/calibration.py), the DGC statistics, the attacker's strength rule, seeding."""

import json

import numpy as np
import pytest

from fl_mdisc.burnin import burnin_key, ensure_burnin
from fl_mdisc.calibration import apply_calibration, calibrate, calibration_key, fit_fpr_threshold, n_honest
from fl_mdisc.experiment import make_plan

from .conftest import tiny_cfg, tiny_overrides


class TestFitFprThreshold:
    def test_meets_target_on_its_own_values(self):
        rng = np.random.default_rng(0)
        steps = np.repeat(np.arange(50), 4)
        vals = 0.5 + 0.01 * steps + rng.normal(0, 0.05, len(steps))
        for fpr in (0.01, 0.05, 0.2):
            mu, tau = fit_fpr_threshold(steps, vals, fpr)
            rate = np.mean(vals > mu + tau * steps)
            assert rate <= fpr and rate > fpr - 0.03
            assert abs(tau - 0.01) < 0.002  # the slope is the least-squares slope

    def test_hand_values_without_slope(self):
        mu, tau = fit_fpr_threshold([0, 1, 2, 3], [1.0, 4.0, 2.0, 3.0], 0.25, slope=False)
        assert (mu, tau) == (3.0, 0.0)  # exactly one of four values (4.0) lies above

    def test_negative_slope_is_clipped(self):
        mu, tau = fit_fpr_threshold([0, 1, 2], [3.0, 2.0, 1.0], 0.0)
        assert tau == 0.0 and mu == 3.0


def test_the_simulation_assumes_only_what_the_server_is_told(tiny):
    # the simulated truth (fed.num_malicious) never sets the simulated honest federation; assume.f does
    assert n_honest(_cfg(tiny, "fed.num_clients=10", "fed.num_malicious=3")) == 10
    assert n_honest(_cfg(tiny, "fed.num_clients=10", "fed.num_malicious=3", "assume.f=2")) == 8


def _cfg(tiny, *extra):
    return tiny_cfg(tiny, "strategy=dgc_paper", "strategy.calib_rounds=12", *extra)


def test_calibration_key_changes_with_every_input(tiny):
    cfg = _cfg(tiny)
    entry = ensure_burnin(cfg, log=lambda m: None)
    k0 = calibration_key(cfg, entry)
    for ov in ("fed.batch_size=40", "fed.client_lr=0.5", "fed.local_steps=2", "fed.server_lr=0.05",
               "fed.server_momentum=0.5", "fed.num_clients=4",
               "strategy.probe_size=400", "strategy.target_fpr=0.1", "strategy.calib_rounds=13",
               "split.calib=120", "strategy.clip_norm=1.0", "protocol=harness", "fed.clients_per_round=2",
               "fed.partition=dirichlet", "fed.partition=pathological"):
        c = _cfg(tiny, ov)
        assert calibration_key(c, entry) != k0, ov
    for sha in ("start_sha", "hist_sha"):  # another burn-in (another machine, another seed)
        assert calibration_key(cfg, dict(entry, **{sha: "0" * 64})) != k0
    d = _cfg(tiny, "fed.partition=dirichlet")
    assert calibration_key(_cfg(tiny, "fed.partition=dirichlet", "fed.dirichlet_alpha=0.1"), entry) != calibration_key(d, entry)
    assert "partition" not in k0 and "clients_per_round" not in k0  # full IID participation: earlier caches stay valid


def test_burnin_key_and_plan_follow_the_seed(tiny):
    a, b = _cfg(tiny, "seed=0"), _cfg(tiny, "seed=1")
    assert burnin_key(a) != burnin_key(b)
    assert burnin_key(_cfg(tiny, "seed=1", "burnin.seed=0")) == burnin_key(a)
    pa, pb = make_plan(_cfg(tiny, "seed=0", "attack=lambda_update")), make_plan(_cfg(tiny, "seed=1", "attack=lambda_update"))
    assert not np.array_equal(pa.partitions[0], pb.partitions[0])  # partitions redrawn
    assert not np.array_equal(pa.attacker[2][1], pb.attacker[2][1])  # the attacker's trigger batch redrawn
    assert sorted(np.concatenate(pa.partitions)) == sorted(np.concatenate(pb.partitions))  # same pool


def test_fitted_threshold_meets_target_fpr_and_is_cached(tiny):
    cfg = _cfg(tiny, "strategy.target_fpr=0.1")
    entry = ensure_burnin(cfg, log=lambda m: None)
    said = []
    fit = calibrate(cfg, entry, log=said.append)
    steps, stat = np.array(fit["values"]["steps"]), np.array(fit["values"]["stat"])
    assert len(stat) == 12 * 3  # rounds x simulated honest clients (3 clients; the server assumes nothing)
    assert np.mean(stat > fit["mu"] + fit["tau"] * steps + 1e-7) <= 0.1 == fit["target_fpr"]  # stored values: 8 decimals
    assert fit["fpr_in_sample"] <= 0.1 and fit["clip_norm"] > 0
    assert "held out of the burn-in" in fit["data"]
    again = []
    fit2 = calibrate(cfg, entry, log=again.append)
    assert fit2 == json.loads(json.dumps(fit)) and any("cache hit" in m for m in again)


def test_explicit_values_are_used_unchanged(tiny):
    cfg = _cfg(tiny, "strategy.clip_norm=1.25", "strategy.mu=0.5", "strategy.tau=0.002")
    entry = ensure_burnin(cfg, log=lambda m: None)
    assert apply_calibration(cfg, entry, log=lambda m: None) is None
    assert (cfg.strategy.clip_norm, cfg.strategy.mu, cfg.strategy.tau) == (1.25, 0.5, 0.002)
    cfg = _cfg(tiny, "strategy.mu=0.5", "strategy.tau=0.002")  # only C is fitted
    fit = apply_calibration(cfg, entry, log=lambda m: None)
    assert cfg.strategy.clip_norm == fit["clip_norm"] and (cfg.strategy.mu, cfg.strategy.tau) == (0.5, 0.002)


def test_attacker_norm_is_a_multiple_of_its_own_honest_norm(tiny):
    from clients.malicious import honest_reference_norm, train_malicious
    from fl_mdisc.burnin import load_model
    from fl_mdisc.config import to_json
    from fl_mdisc.models import get_params

    cfg = _cfg(tiny, "attack=lambda_update", "attack.norm_multiple=2.5")
    entry = ensure_burnin(cfg, log=lambda m: None)
    model = load_model(cfg, entry["start"], entry["start_sha"])
    params = get_params(model)  # theta_t = theta_start, but in round 3: "start" uses round 1's batch
    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "server-round": 3, "phase": "accumulate"}
    new, met = train_malicious(to_json(cfg), params, conf, 2)
    sent = float(np.sqrt(sum(((n - p).astype(np.float64) ** 2).sum() for n, p in zip(new, params))))
    plan = make_plan(cfg)
    ref = honest_reference_norm(cfg, plan, model, plan.attacker[2][2], 1, 2)
    assert sent == pytest.approx(2.5 * ref, rel=1e-4) and met["attack-norm"] == pytest.approx(sent, rel=1e-4)
    assert met["attack-ref-norm"] == pytest.approx(ref, rel=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(get_params(model), params))  # the reference left no trace


def test_calibrate_command_shows_the_fit(tiny, capsys):
    from app.cli import main

    data, cache, base = tiny
    out = base / "calib-cmd"
    assert main(["calibrate", *tiny_overrides(data, cache, out, "strategy.calib_rounds=10")]) == 0
    fit = json.loads((out / "calibration_fit.json").read_text())
    assert fit["statistic"] == "increase" and fit["rounds"] == 10 and fit["fpr_in_sample"] <= fit["target_fpr"]
    assert (out / "calibration.png").stat().st_size > 1000
    assert "calibrated" in capsys.readouterr().out or "cache hit" in capsys.readouterr().out


def test_stealthy_attacker_pauses_below_its_budget(tiny, monkeypatch):
    from clients.honest import train_honest
    from clients.malicious import train_malicious
    from fl_mdisc.burnin import load_model
    from fl_mdisc.config import to_json
    from fl_mdisc.models import get_params

    cfg = _cfg(tiny, "attack=lambda_update", "attack.norm_multiple=2.0", "attack.stealth_drop=5")
    entry = ensure_burnin(cfg, log=lambda m: None)
    start = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "server-round": 2, "phase": "accumulate"}
    _, met = train_malicious(to_json(cfg), start, conf, 2)  # at theta_start: no drop, it attacks
    assert met["attack-val-drop"] == 0.0 and "attack-paused" not in met and met["attack-norm"] > 0
    from clients import malicious

    monkeypatch.setattr(malicious, "start_val_accuracy", lambda *a: 100.0)  # as if it had been perfect at the start
    broken = [np.zeros_like(a) for a in start]
    new, met = train_malicious(to_json(cfg), broken, conf, 2)
    assert met["attack-paused"] == 1 and met["attack-val-drop"] >= 5
    honest, _ = train_honest(to_json(cfg), broken, conf, 2)  # it sends what an honest client would
    assert all(np.array_equal(a, b) for a, b in zip(new, honest))
