"""The DGC-aware attacker (fl_mdisc/adaptive.py, attack=adaptive_update)."""

import numpy as np
import pytest
import torch

from fl_mdisc.adaptive import attacker_calibration, budget_at, estimated_statistic, largest_scale_within
from fl_mdisc.burnin import ensure_burnin, load_model
from fl_mdisc.config import to_json
from fl_mdisc.errors import ConfigError
from fl_mdisc.md import md_from_logits
from fl_mdisc.models import get_params

from .conftest import TinyNet, tiny_cfg


class TestLargestScaleWithin:
    def test_bisection_on_a_monotone_statistic(self):
        c, s = largest_scale_within(lambda c: 4.0 * c * c, 1.0, steps=20)  # 4c^2 <= 1  <=>  c <= 0.5
        assert abs(c - 0.5) < 1e-5 and s <= 1.0

    def test_whole_update_when_it_fits_and_nothing_when_nothing_fits(self):
        assert largest_scale_within(lambda c: c, 2.0) == (1.0, 1.0)
        assert largest_scale_within(lambda c: 1.0 + c, 0.5, steps=5) == (0.0, 0.0)

    def test_budget_is_a_multiple_of_the_calibrated_level_of_the_round(self):
        fit = {"mu": 0.1, "tau": 0.01}
        assert budget_at(fit, 0.5, 3) == pytest.approx((0.5 * 0.12, 0.12))  # round 3: server step t = 2
        assert budget_at({"mu": -0.2, "tau": 0.0}, 2.0, 1) == (2e-6, 1e-6)  # a level at or below 0: floor
        levels = {"levels": {"1": 0.3, "2": 0.4}}  # the history gate's estimated cut per round
        assert budget_at(levels, 2.0, 2) == pytest.approx((0.8, 0.4))
        assert budget_at(levels, 1.0, 9) == pytest.approx((0.4, 0.4))  # after the simulated rounds: the last one

    def test_history_levels_are_the_gates_cut(self):
        from omegaconf import OmegaConf

        from fl_mdisc.adaptive import history_levels

        view = OmegaConf.create({"strategy": {"pool_rounds": 2, "kappa": 3.5}})
        steps, vals = [0, 0, 0, 1, 1, 1], [0.0, 0.1, 0.3, 0.2, 0.2, 0.5]
        lv = history_levels(steps, vals, view)
        # round 1: median 0.1, |c| = 0.1, 0, 0.2 -> sigma = 1.4826 * 0.1; round 2: median 0.2, pooled |c| median 0.1
        assert lv["1"] == pytest.approx(0.1 + 3.5 * 1.4826 * 0.1) and lv["2"] == pytest.approx(0.2 + 3.5 * 1.4826 * 0.05)


def test_estimated_statistic_by_hand():
    torch.manual_seed(0)
    m, hist = TinyNet(1), TinyNet(2)
    x = torch.rand(20, 3, 8, 8)
    with torch.no_grad():
        hl = hist(x)
    theta = [p.detach().clone() for p in m.parameters()]
    delta = [torch.randn_like(t) for t in theta]
    norm = float(torch.sqrt(sum((d ** 2).sum() for d in delta)))
    C, eta = norm / 2, 0.1  # GC halves it
    got = estimated_statistic(m, theta, delta, eta, C, x, hl)
    cand = TinyNet(1)
    with torch.no_grad():
        for p, t, d in zip(cand.parameters(), theta, delta):
            p.copy_(t + eta * 0.5 * d)
        want = float(md_from_logits(hl, cand(x)).mean()) - float(md_from_logits(hl, m(x)).mean())
    assert abs(got - want) < 1e-5
    assert all(torch.equal(p, t) for p, t in zip(m.parameters(), theta))  # the model is left at theta


def _adaptive(tiny, *extra):
    return tiny_cfg(tiny, "strategy=dgc", "attack=adaptive_update", "attack.norm_multiple=2.0", "attack.probe_size=32",
                    *extra)


def test_sent_update_meets_its_own_budget(tiny):
    from clients import malicious
    from clients.malicious import train_malicious
    from fl_mdisc.adaptive import estimated_statistic as est

    cfg = _adaptive(tiny, "attack.md_budget=0.005", "attack.stealth_drop=null")
    entry = ensure_burnin(cfg, log=lambda m: None)
    start = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"],
            "hist-sha": entry["hist_sha"], "server-round": 2, "phase": "accumulate"}
    cj = to_json(cfg)
    pid = 2
    new, met = train_malicious(cj, start, conf, pid)
    assert 0.0 <= met["attack-scale"] < 1.0  # 1/200 of the calibrated level: the update must shrink
    assert met["attack-md-est"] <= met["attack-md-budget"] == pytest.approx(0.005 * met["attack-md-ref"])
    fit = malicious.adaptive_calibration(cj, pid, entry["start"], entry["start_sha"], entry["hist"], entry["hist_sha"])
    assert met["attack-md-ref"] == pytest.approx(budget_at(fit, 1.0, 2)[1])  # round 2: the gate's estimated cut
    assert fit["gate"] == "history" and "levels" in fit
    # recompute the estimate independently from what was sent
    m = load_model(cfg, entry["start"], entry["start_sha"])
    theta = [p.detach().clone() for p in m.parameters() if p.requires_grad]
    delta = [torch.as_tensor(n - s) for n, s in zip(new, start)]
    probe_x, hist_logits = malicious.adaptive_probe(cj, pid, entry["hist"], entry["hist_sha"])
    again = est(m, theta, delta, float(cfg.fed.server_lr), fit["clip_norm"], probe_x, hist_logits)
    assert again <= met["attack-md-budget"] + 1e-6 and again == pytest.approx(met["attack-md-est"], abs=1e-5)
    # a budget the whole update fits sends the plain lambda-update; unaware (null) too
    loose, met2 = train_malicious(to_json(_adaptive(tiny, "attack.md_budget=1e9", "attack.stealth_drop=null")), start, conf, pid)
    plain, _ = train_malicious(to_json(_adaptive(tiny, "attack.md_budget=null", "attack.stealth_drop=null")), start, conf, pid)
    ref, _ = train_malicious(to_json(tiny_cfg(tiny, "strategy=dgc", "attack=lambda_update", "attack.norm_multiple=2.0",
                                              "attack.stealth_drop=null")), start, conf, pid)
    assert met2["attack-scale"] == 1.0
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(loose, plain, ref))


def test_attacker_runs_the_servers_calibration_rule(tiny):
    """Given the server's own calibration images and probe, the attacker's estimate is the server's fit exactly: the
    rule is the same code, only the data differ."""
    from fl_mdisc.calibration import calibrate
    from fl_mdisc.data import load_dataset, split_of

    cfg = _adaptive(tiny, "strategy=dgc_paper", "num_rounds=12", "strategy.calib_rounds=12", "strategy.probe_size=32",
                    "strategy.target_fpr=0.1")
    entry = ensure_burnin(cfg, log=lambda m: None)
    split = split_of(cfg, len(load_dataset(cfg.dataset.name, cfg.data_root).y_train))
    server = calibrate(cfg, entry, log=lambda m: None)
    mine = attacker_calibration(cfg, entry, 2, split.calib, split.probe[:32], log=lambda m: None)
    assert (mine["clip_norm"], mine["mu"], mine["tau"]) == (server["clip_norm"], server["mu"], server["tau"])


def test_launcher_prepares_what_the_client_loads(tiny, monkeypatch):
    """The launcher's preparation (before Ray starts) and the ClientApp compute the same cache key: the client only
    loads it. Against a non-DGC strategy the attacker assumes DGC's defaults (the same attacker in every column)."""
    from clients import malicious
    from fl_mdisc import calibration
    from fl_mdisc.adaptive import prepare_attackers

    cfg = _adaptive(tiny, "strategy=st", "attack.probe_size=30")  # a probe no other test uses: a fresh cache entry
    entry = ensure_burnin(cfg, log=lambda m: None)
    said = []
    prepare_attackers(cfg, entry, log=said.append)
    assert any("calibration rule" in m for m in said)
    monkeypatch.setattr(calibration, "simulate", lambda *a, **k: pytest.fail("the client re-simulated"))
    fit = malicious.adaptive_calibration(to_json(cfg), 2, entry["start"], entry["start_sha"], entry["hist"], entry["hist_sha"])
    assert fit["key"]["statistic"] == "increase" and fit["key"]["probe_size"] == 30 and fit["clip_norm"] > 0
    again = []
    prepare_attackers(cfg, entry, log=again.append)
    assert again == []  # cached: nothing recomputed
    none = []
    prepare_attackers(_adaptive(tiny, "attack.md_budget=null"), entry, log=none.append)
    assert none == []  # the unaware attacker needs no calibration


def test_config_rules(tiny):
    with pytest.raises(ConfigError, match="md_budget"):
        _adaptive(tiny, "attack.md_budget=0")
    with pytest.raises(ConfigError, match="probe_size"):
        _adaptive(tiny, "attack.probe_size=50")  # val_size is 50 in the tiny config


def test_adaptive_report(tmp_path):
    from app.adaptive_sweep import adaptive_markdown, adaptive_rows, attacker_stats, plot_adaptive

    def run(b, strat, seed, scale):
        dgc = strat == "dgc"
        rounds = [{"round": i + 1, "phase": "accumulate", "clients": [
            {"partition-id": 1, "malicious": True, "attack-norm": 2.0 * scale, **({} if b is None else {"attack-scale": scale, "attack-md-est": 0.1}),
             **({"flagged": b is None or i % 2 == 0} if dgc else {})},
            {"partition-id": 0, "malicious": False, **({"flagged": False} if dgc else {})}]} for i in range(4)]
        rounds.append({"round": 5, "phase": "trigger", "clients": [{"partition-id": 1, "malicious": True, "attack-norm": 50.0,
                                                        **({"flagged": True} if dgc else {})}]})  # not counted
        return {"budget": b, "strategy": strat, "seed": seed, "rounds": rounds,
                "summary": {"mean_accuracy": 60.0 + seed, "trigger_drop": 1.0}}

    assert attacker_stats(run(None, "st", 0, 1.0)["rounds"]) == {"norm": 2.0, "scale": 1.0, "md_est": None,
                                                                 "recall": None, "precision": None}
    assert attacker_stats(run(1.0, "dgc", 0, 0.25)["rounds"])["recall"] == 0.5  # 2 of 4 poisoning rounds, trigger out
    runs = [run(b, s, seed, sc) for b, sc in ((None, 1.0), (1.0, 0.25)) for s in ("dgc", "st") for seed in (0, 1)]
    rows = adaptive_rows(runs)
    assert [(r["budget"], r["strategy"]) for r in rows] == [("unaware", "st"), ("unaware", "dgc"), ("1", "st"), ("1", "dgc")]
    assert rows[3]["recall"] == (0.5, 0.0) and rows[2]["attacker_norm"] == (0.5, 0.0) and rows[2]["accuracy"] == (60.5, 0.5)
    doc = {"preset": "cpu", "rounds": 50, "seeds": [0, 1], "rows": rows, "command": "fl-mdisc adaptive"}
    md = adaptive_markdown(doc)
    assert "| 1 | DGC (history) | 60.50 ± 0.50 | 1.00 ± 0.00 | 0.500 ± 0.000 | 1.000 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 |" in md
    plot_adaptive(doc, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0


def test_adaptive_refuses_bad_budgets():
    from app.adaptive_sweep import adaptive

    for bad in ("budgets=[0]", "budgets=[x]"):
        with pytest.raises(ConfigError, match="budgets"):
            adaptive([bad])
