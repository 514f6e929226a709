"""Table/report code on small synthetic metric files (no simulation)."""

import json

import pytest

from fl_mdisc.errors import ConfigError
from app.report import (aggregate_cells, detection, paper_table13, plot_md_hist, plot_md_stream, plot_table13,
                             table1_markdown, table1_rows, write_table13)
from app.tables import pop_list


def _run(scen, strat, seed, accs, rounds=None, attack="lambda_update", summary=None):
    metrics = [{"round": r, "accuracy": a, "phase": "start" if r == 0 else "accumulate"} for r, a in accs]
    return {"scenario": scen, "strategy": strat, "seed": seed, "attack": attack, "metrics": metrics,
            "rounds": rounds or [], "summary": summary or {}}


def test_aggregate_mean_std_over_seeds():
    runs = [_run("poisoned", "gc", 0, [(0, 60), (10, 70), (20, 72)]), _run("poisoned", "gc", 1, [(0, 60), (10, 74), (20, 68)]),
            _run("clean", "st", 0, [(0, 60), (10, 65), (20, 66)])]
    cells = aggregate_cells(runs, [10, 20])
    assert [c["scenario"] for c in cells] == ["clean", "poisoned"]
    gc = cells[1]
    assert gc["seeds"] == [0, 1] and gc["accuracy_mean"] == [72.0, 70.0] and gc["accuracy_std"] == [2.0, 2.0]
    assert gc["mean_over_evals"] == pytest.approx(71.0)
    assert gc["mean_over_evals_per_seed"] == {"0": 71.0, "1": 71.0}  # (70 + 72) / 2, (74 + 68) / 2


def test_per_seed_table_one_row_per_seed():
    runs = [_run("poisoned", "gc", 0, [(0, 60), (10, 70)]), _run("poisoned", "gc", 1, [(0, 60), (10, 74)]),
            _run("clean", "st", 1, [(0, 60), (10, 65)])]
    from app.report import per_seed_table
    lines = per_seed_table(aggregate_cells(runs, [10]))
    assert lines[3] == "| seed | clean ST | poisoned GC |"
    assert lines[5:] == ["| 0 | – | 70.00 |", "| 1 | 65.00 | 74.00 |"]


def test_detection_precision_recall_auroc():
    rounds = [{"round": 1, "phase": "accumulate", "clients": [
        {"partition-id": 0, "md": 0.5, "malicious": False, "flagged": False}, {"partition-id": 1, "md": 0.9, "malicious": True, "flagged": True}]},
        {"round": 2, "phase": "accumulate", "clients": [
            {"partition-id": 0, "md": 0.8, "malicious": False, "flagged": True}, {"partition-id": 1, "md": 0.7, "malicious": True, "flagged": False}]}]
    rows = detection([_run("poisoned", "dgc", 0, [(0, 1)], rounds=rounds)])
    assert [r["seed"] for r in rows] == ["0", "all"]  # per seed (its own burn-in), then pooled
    for d in rows:
        assert d["precision"] == 0.5 and d["recall"] == 0.5
        assert d["auroc"] == pytest.approx(0.75)  # 0.9 beats both honest, 0.7 beats 0.5 only
        assert d["flagged_honest_rate"] == 0.5


def test_detection_scores_the_logged_statistic_and_pools_seeds():
    def rounds(stat_h, stat_m):
        return [{"round": 1, "phase": "accumulate", "clients": [
            {"partition-id": 0, "md": 9.0, "stat": stat_h, "malicious": False, "flagged": False},
            {"partition-id": 1, "md": 0.0, "stat": stat_m, "malicious": True, "flagged": True}]}]
    rows = detection([_run("poisoned", "dgc", 0, [(0, 1)], rounds=rounds(0.1, 0.5)),
                      _run("poisoned", "dgc", 1, [(0, 1)], rounds=rounds(0.2, 0.1))])
    by = {r["seed"]: r for r in rows}
    assert by["0"]["auroc"] == 1.0 and by["1"]["auroc"] == 0.0  # the 'stat' column, not 'md', is scored
    assert by["all"]["n_honest"] == 2 and by["all"]["recall"] == 1.0


def test_table13_files_have_the_documented_shape(tmp_path):
    runs = [_run(s, st, 0, [(0, 60), (10, 61), (20, 62)]) for s in ("clean", "poisoned") for st in ("st", "gc", "dgc")]
    doc = {"preset": "cpu", "dataset": "cifar10", "model": "small_cnn", "protocol": "harness", "num_clients": 1,
           "num_malicious": 1, "seeds": [0], "steps": [10, 20], "cells": aggregate_cells(runs, [10, 20]),
           "paper": paper_table13(), "detection": []}
    write_table13(doc, tmp_path)
    data = json.loads((tmp_path / "table13.json").read_text())
    assert set(data) >= {"preset", "dataset", "model", "num_clients", "num_malicious", "steps", "cells", "paper", "protocol"}
    cell = data["cells"][0]
    assert set(cell) >= {"scenario", "strategy", "seeds", "accuracy_mean", "accuracy_std"}
    assert len(cell["accuracy_mean"]) == len(data["steps"])
    assert data["paper"]["steps"] == [10, 100, 200, 300, 400, 500]
    assert data["paper"]["cells"][3]["accuracy_mean"][-1] == 69.23  # poisoned ST at step 500
    md = (tmp_path / "table13.md").read_text()
    assert "| poisoned | DGC |" in md and "Paper" in md
    assert (tmp_path / "table13.csv").read_text().count("\n") == 13
    plot_table13(data, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_md_plots(tmp_path):
    rounds = [{"round": r, "phase": "accumulate", "clients": [
        {"md": 0.5, "malicious": False, "md-in-p10": 1, "md-in-p50": 2, "md-in-p90": 3,
         "md-clean-p10": 0.1, "md-clean-p50": 0.2, "md-clean-p90": 0.3}, {"md": 0.9, "malicious": True}]} for r in (1, 2, 3)]
    run = _run("poisoned", "st", 0, [(0, 1)], rounds=rounds)
    plot_md_hist([run], tmp_path / "h.png")
    plot_md_stream([run], tmp_path / "s.png")
    assert (tmp_path / "h.png").stat().st_size > 1000 and (tmp_path / "s.png").stat().st_size > 1000


def test_table1_rows():
    runs = [{"scenario": "poisoned", "method": "dsc", "seed": s, "summary": {
        "accuracy_start": 66.0, "last_round": 10 + s, "accuracy_final": 62.0, "accuracy_after_trigger": 60.0 - s,
        "trigger_drop": 2.0 + s, "dsc_corrected_samples": 100}} for s in (0, 1)]
    (row,) = table1_rows(runs)
    assert row["batch"] == (10.5, 0.5) and row["delta"] == (-2.5, 0.5) and row["trigger"] == (59.5, 0.5)
    md = table1_markdown({"preset": "cpu", "model": "m", "rounds": 60, "monitor_drop": 4, "seeds": [0, 1], "rows": [row],
                          "paper": {"start": 86.3, "clean": {"st": 84.4}, "poisoned": {"dsc": {"batch": 3, "poison": 81.2,
                                                                                                "trigger": 77.3, "delta": -3.8}}}})
    assert "| poisoned | DSC | 66.00 ± 0.00 | 10.50 ± 0.50 |" in md and "CIFAR-10, ResNet-18; start 86.3)" in md
    from app.report import PAPER_TABLE1

    svhn = table1_markdown({"preset": "cpu", "model": "m", "rounds": 60, "monitor_drop": 4, "seeds": [0, 1], "rows": [row],
                            "dataset": "svhn", "paper": PAPER_TABLE1["svhn"]})
    assert "Table 1, SVHN, ResNet-18; start illegible in our copy; its DSC threshold mu = 0.5, tau = 0.02" in svhn
    assert "| poisoned | GC | 7 | 89.7 | 88.3 | -1.4 |" in svhn
    mnist = table1_markdown({"preset": "cpu", "model": "m", "rounds": 60, "monitor_drop": 4, "seeds": [0], "rows": [row],
                             "dataset": "mnist", "paper": None})
    assert "MNIST" in mnist and "has no MNIST rows" in mnist


def test_pop_list():
    val, rest = pop_list(["seeds=[0,1,2]", "strategy=gc"], "seeds", [0])
    assert val == ["0", "1", "2"] and rest == ["strategy=gc"]
    with pytest.raises(ConfigError):
        pop_list(["seeds=[]"], "seeds", [0])


def test_complete_cell_is_reused_only_for_the_same_experiment(tmp_path):
    from omegaconf import OmegaConf

    from fl_mdisc.config import compose
    from fl_mdisc.errors import FlMdiscError
    from app.tables import check_cell_matches

    overrides = ["protocol=harness", "num_rounds=40", "strategy=dgc_paper", "attack=lambda_update", "seed=1"]
    cell = tmp_path / "harness-poisoned-dgc-s1"
    cell.mkdir()
    (cell / "summary.json").write_text("{}")
    (cell / "config.yaml").write_text(OmegaConf.to_yaml(compose(overrides)))
    check_cell_matches({"name": cell.name, "overrides": overrides}, cell)  # same experiment: reused
    for changed, key in (("num_rounds=60", "num_rounds"), ("strategy.mode=scale", "strategy.mode"),
                         ("attack.trigger_scale=0.5", "attack.trigger_scale")):
        with pytest.raises(FlMdiscError, match=f"{key}: .* != .*another out_dir"):
            check_cell_matches({"name": cell.name, "overrides": overrides + [changed]}, cell)


def test_table13_default_length_per_protocol():
    from fl_mdisc.config import compose
    from app.tables import default_table13_rounds
    assert default_table13_rounds(compose(["preset=cpu", "protocol=harness", "strategy=st"])) == 200
    assert default_table13_rounds(compose(["preset=cpu", "protocol=federated"])) == 100
    assert default_table13_rounds(compose(["preset=paper", "protocol=federated"])) == 500
    assert default_table13_rounds(compose(["preset=cpu", "tables.table13_rounds=30"])) == 30


class TestReportSteps:
    @pytest.mark.parametrize("R,every", [(60, 10), (100, 10), (50, 10), (7, 3), (200, 25), (30, 1)])
    def test_never_a_step_that_was_not_evaluated(self, R, every):
        from app.report import report_steps

        steps = report_steps(R, every)
        evaluated = {r for r in range(1, R + 1) if r % every == 0} | {R}
        assert set(steps) <= evaluated and R in steps and steps == sorted(set(steps))

    def test_the_old_columns_where_they_were_evaluated(self):
        from app.report import report_steps

        assert report_steps(100, 10) == [10, 20, 40, 60, 80, 100]
        assert report_steps(60, 10) == [10, 20, 30, 40, 60]  # 12, 24, 36, 48 were never evaluated


class TestGridSummary:
    def test_flag_rates_and_rows(self):
        from app.grid import flag_rates, summarise

        rounds = [{"round": 1, "phase": "accumulate", "clients": [
            {"partition-id": 0, "malicious": False, "flagged": True}, {"partition-id": 1, "malicious": False, "flagged": False},
            {"partition-id": 2, "malicious": True, "flagged": True}]},
                  {"round": 2, "phase": "trigger", "clients": [{"partition-id": 2, "malicious": True, "flagged": False}]}]
        assert flag_rates(rounds) == {"honest": 2, "honest_flagged": 1, "malicious": 1, "malicious_flagged": 1}
        runs = [{"setting": "a", "strategy": "dgc", "scenario": sc, "seed": s, "rounds": rounds,
                 "summary": {"mean_accuracy": 70.0 + s, "trigger_drop": 1.0, "assumed_f": None}}
                for sc in ("clean", "poisoned") for s in (0, 1)]
        row = summarise(runs)[0]
        assert row["clean_mean"] == 70.5 and row["clean_std"] == 0.5 and row["clean_honest_fpr"] == 0.5
        assert row["recall"] == 1.0 and row["poisoned_precision"] == 0.5 and row["trigger_drop"] == 1.0
        assert row["poisoned_first_sight"] == 2 and row["poisoned_attackers"] == 2 and row["assumed_f"] is None

    def test_targets_can_fail_and_say_by_how_much(self):
        from app.grid import grid_markdown, per_seed_rows, summarise, targets

        def rounds(fp):
            return [{"round": 1, "phase": "accumulate", "clients": [
                {"partition-id": i, "malicious": False, "flagged": i < fp} for i in range(10)]
                + [{"partition-id": 10, "malicious": True, "flagged": True}]}]

        acc = {("poisoned", "dgc"): 70.0, ("poisoned", "gc"): 68.0, ("poisoned", "multikrum@f"): 71.0}
        runs = [{"setting": "a", "strategy": st, "scenario": sc, "seed": seed,
                 "rounds": rounds(seed) if st == "dgc" else [],
                 "summary": {"mean_accuracy": acc.get((sc, st), 72.0), "assumed_f": 1 if st.endswith("@f") else None}}
                for seed in (0, 1) for sc in ("clean", "poisoned") for st in ("gc", "dgc", "multikrum@f")]
        rows, per_seed = summarise(runs), per_seed_rows(runs)
        t = targets(rows, per_seed, "dgc")
        assert [(x["seed"], x["fpr_ok"]) for x in t if x["seed"] != "mean"] == [(0, True), (1, False)]  # 0.0, 0.1
        mean = next(x for x in t if x["seed"] == "mean")
        assert mean["best_other"] == "multikrum@f" and mean["poisoned_gap"] == -1.0 and mean["poisoned_ok"] is False
        assert mean["clean_gap_vs_gc"] == 0.0 and mean["clean_ok"] is True
        # a partial grid (Multi-Krum's seed 1 not run): compared on the seeds both rows ran, not mean against mean
        part = [dict(r, summary={**r["summary"], "mean_accuracy": 80.0})
                if (r["strategy"], r["scenario"], r["seed"]) == ("dgc", "poisoned", 1) else r for r in runs
                if (r["strategy"], r["scenario"], r["seed"]) != ("multikrum@f", "poisoned", 1)]
        pm = next(x for x in targets(summarise(part), per_seed_rows(part), "dgc") if x["seed"] == "mean")
        assert (pm["best_other"], pm["poisoned_gap"], pm["poisoned_seeds"]) == ("multikrum@f", -1.0, 1)
        doc = {"preset": "cpu", "rounds": 5, "seeds": [0, 1], "eval_every": 5, "settings": {"a": []}, "rows": rows,
               "steps": [5], "command": "x", "strategies": ["gc", "dgc", "multikrum@f"], "per_seed": per_seed,
               "targets": t, "target_strategy": "dgc", "target_rule": {"fpr": 0.02, "recall": 0.9, "precision": 0.9,
                                                                      "margin": 0.3}}
        md = grid_markdown(doc)
        assert "| a | 1 | 0.100 | **no** |" in md and "Multi-Krum (told f)" in md and "| f = 1 |" in md
        partial = grid_markdown({**doc, "not_run": ["a-poisoned-gc-s2"]})
        assert "Not run" not in md and "Not run (1 cells" in partial and "70.00 ± 0.00 (s0,1)" in partial

    def test_attack_and_byzfl_axes(self, tmp_path):
        from app.grid import grid_markdown, plot_grid, scenario_of, strategy_overrides, summarise
        from app.report import label

        assert strategy_overrides("dgc") == ["strategy=dgc"]
        assert strategy_overrides("byzfl-geomed-nnm") == ["strategy=byzfl", "strategy.aggregator=geomed",
                                                           "strategy.pre=[nnm]"]
        assert strategy_overrides("byzfl-cc") == ["strategy=byzfl", "strategy.aggregator=cc", "strategy.pre=[]"]
        assert strategy_overrides("multikrum@f", 10) == ["strategy=multikrum", "assume.f=10"]
        assert label("byzfl-geomed-nnm") == "ByzFL NNM+GEOMED" and label("multikrum@f") == "Multi-Krum (told f)"
        assert [scenario_of(a, "lambda_update") for a in ("none", "lambda_update", "alie")] == ["clean", "poisoned", "alie"]
        rounds = [{"round": 1, "phase": "accumulate", "clients": [{"partition-id": 0, "malicious": False, "flagged": False},
                                                                  {"partition-id": 1, "malicious": True, "flagged": True}]}]
        acc = {("poisoned", 0): 62.0, ("poisoned", 1): 63.0, ("alie", 0): 60.0}  # ALIE's seed 1 not run
        runs = [{"setting": "a", "strategy": st, "scenario": sc, "seed": seed, "rounds": rounds if st == "dgc" else [],
                 "summary": {"mean_accuracy": acc.get((sc, seed), 60.0), "trigger_drop": 0.0}}
                for sc in ("clean", "poisoned", "alie") for st in ("dgc", "byzfl-cc") for seed in (0, 1)
                if (sc, seed) != ("alie", 1)]
        rows = summarise(runs)
        assert rows[0]["alie_mean"] == 60.0 and rows[0]["alie_recall"] == 1.0
        # paired on the seed both ran (60 - 62), not against the λ-update's mean over both seeds (62.5)
        assert (rows[0]["alie_vs_poisoned"], rows[0]["alie_vs_poisoned_seeds"]) == (-2.0, 1)
        assert "clean_vs_poisoned" not in rows[0] and "poisoned_vs_poisoned" not in rows[0]
        doc = {"preset": "cpu", "rounds": 5, "seeds": [0], "eval_every": 5, "settings": {"a": []}, "rows": rows,
               "steps": [5], "command": "x", "scenarios": ["clean", "poisoned", "alie"]}
        md = grid_markdown(doc)
        assert "| a | DGC (history) | alie | 60.00 | -2.00 (1) | 0.000 | 1.000 | 1.000 | 1/1 |" in md and "ByzFL CC" in md
        plot_grid(doc, tmp_path / "g.png")
        assert (tmp_path / "g.png").stat().st_size > 0


def test_grid_missing_skip_reports_the_complete_cells_and_lists_the_others(tmp_path):
    from app.grid import grid

    base = ["preset=cpu", "settings=[iid-n5]", "strategies=[gc]", "attacks=[clean,poisoned]", "extra=none",
            "seeds=[0]", f"out_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="missing=run"):
        grid(base + ["missing=maybe"])
    with pytest.raises(ConfigError, match="no complete cell"):
        grid(base + ["missing=skip"])
    cell = tmp_path / "cells" / "iid-n5-clean-gc-s0"
    cell.mkdir(parents=True)
    (cell / "summary.json").write_text(json.dumps({"mean_accuracy": 71.5, "assumed_f": None}))
    (cell / "metrics.jsonl").write_text(json.dumps({"round": 10, "accuracy": 71.5, "phase": "accumulate"}) + "\n")
    (cell / "rounds.jsonl").write_text("")
    doc = grid(base + ["missing=skip"])
    assert doc["not_run"] == ["iid-n5-poisoned-gc-s0"] and doc["rows"][0]["clean_mean"] == 71.5
    assert "`iid-n5-poisoned-gc-s0`" in (tmp_path / "grid.md").read_text()


def test_multirun_expands_hydra_sweep_syntax():
    from app.tables import expand_sweep

    fixed, dims = expand_sweep(["strategy=gc,dgc", "seed=0,1,2", "fed.num_clients=5"])
    assert fixed == ["fed.num_clients=5"] and dims == [("strategy", ["gc", "dgc"]), ("seed", ["0", "1", "2"])]


def test_table3_rows_markdown_and_plot(tmp_path):
    from app.table3 import PAPER_TABLE3, plot_table3, poison_md, table3_markdown, table3_rows

    def run(meth, beta, seed, md):
        rounds = [{"phase": "accumulate", "clients": [{"poisoned": 1, "md-in-mean": md + k}]} for k in (0.0, 1.0)]
        rounds.append({"phase": "trigger", "clients": [{"poisoned": 1, "md-in-mean": 99.0}]})  # not a poison batch
        return {"method": meth, "beta": beta, "seed": seed, "rounds": rounds, "summary": {
            "accuracy_start": 66.0, "last_round": 5, "accuracy_final": 62.0, "accuracy_after_trigger": 60.0 - seed,
            "trigger_drop": 2.0 + seed, **({"dsc_corrected_samples": 10} if meth == "dsc" else {})}}

    assert poison_md(run("st", 0.0, 0, 2.0)["rounds"]) == 2.5
    runs = [run(m, b, s, md) for m in ("dsc", "st") for b, md in ((0.1, 1.0), (0.0, 2.0)) for s in (0, 1)]
    rows = table3_rows(runs)
    assert [(r["method"], r["beta"]) for r in rows] == [("st", 0.0), ("st", 0.1), ("dsc", 0.0), ("dsc", 0.1)]
    assert rows[0]["delta"] == (-2.5, 0.5) and rows[1]["poison_md"] == (1.5, 0.0) and rows[0]["corrected"] == (None, None)
    doc = {"preset": "cpu", "model": "m", "rounds": 60, "monitor_drop": 4.0, "md_form": "paper", "seeds": [0, 1],
           "rows": rows, "paper": PAPER_TABLE3, "command": "fl-mdisc table3"}
    md = table3_markdown(doc)
    assert "| ST | 0 | 66.00 ± 0.00 | 62.00 ± 0.00 | 59.50 ± 0.50 | -2.50 ± 0.50 | 5.00 ± 0.00 | 2.50 ± 0.00 | – | 81.4 | 51.3 | -30.04 |" in md
    assert "| DSC | 0.1 |" in md and md.count("| – | – | – |") == 2  # no paper row for DSC
    plot_table3(doc, tmp_path / "t3.png")
    assert (tmp_path / "t3.png").stat().st_size > 0


def test_table3_refuses_bad_arguments():
    from app.table3 import table3

    with pytest.raises(ConfigError, match="method"):
        table3(["methods=[gc]"])
    with pytest.raises(ConfigError, match="betas"):
        table3(["betas=[-0.1]"])


def test_attack_beta_is_validated():
    from fl_mdisc.config import compose

    with pytest.raises(ConfigError, match="attack.beta"):
        compose(["attack=accumulative", "attack.beta=-1"])
    with pytest.raises(ConfigError, match="md_form"):
        compose(["attack=accumulative", "attack.md_form=other"])


def test_reused_cells_must_share_beta_and_the_dgc_fit_window(tmp_path):
    from omegaconf import OmegaConf

    from fl_mdisc.config import compose
    from fl_mdisc.errors import FlMdiscError
    from app.tables import check_cell_matches

    def recorded(overrides, drop=()):
        cell = tmp_path / "c"
        cell.mkdir(exist_ok=True)
        cfg = compose(overrides)
        for key in drop:  # a cell recorded before the key existed
            del cfg.strategy[key]
        (cell / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        return cell

    acc = ["attack=accumulative", "strategy=st"]
    cell = recorded(acc)
    check_cell_matches({"name": "c", "overrides": acc + ["attack.beta=0.0"]}, cell)
    with pytest.raises(FlMdiscError, match="attack.beta"):
        check_cell_matches({"name": "c", "overrides": acc + ["attack.beta=0.1"]}, cell)
    dgc = ["strategy=dgc", "fed.num_clients=10"]
    cell = recorded(dgc)
    with pytest.raises(FlMdiscError, match="strategy.gate: history != paper"):  # the gate defines the experiment
        check_cell_matches({"name": "c", "overrides": ["strategy=dgc_paper", "fed.num_clients=10"]}, cell)
    with pytest.raises(FlMdiscError, match="assume.f: None != 1"):  # and so does what the server was told
        check_cell_matches({"name": "c", "overrides": dgc + ["assume.f=1"]}, cell)


def test_table3_cells_carry_attack_overrides(monkeypatch, tmp_path):
    from app import tables
    from fl_mdisc.config import compose
    from app.table3 import table3

    class Stop(Exception):
        pass

    seen = []

    def fake_run_cells(cells, quiet=True):
        seen.extend(cells)
        raise Stop

    monkeypatch.setattr(tables, "run_cells", fake_run_cells)
    with pytest.raises(Stop):
        table3(["attack.md_form=input", "betas=[0,0.1]", "methods=[dsc]", f"out_dir={tmp_path}"])
    assert [c["name"] for c in seen] == ["online-dsc-b0-s0", "online-dsc-b0.1-s0"]
    cfg = compose(seen[1]["overrides"])
    assert (cfg.attack.name, cfg.attack.md_form, cfg.attack.beta, cfg.defense.name) == ("stream_poison", "input", 0.1, "dsc")


def test_cells_of_the_retired_adaptive_budget_rule_are_not_reused(tmp_path):
    from omegaconf import OmegaConf

    from fl_mdisc.config import compose
    from fl_mdisc.errors import FlMdiscError
    from app.tables import check_cell_matches

    for budget, reusable in (("1.0", False), ("null", True)):
        over = ["strategy=dgc", "attack=adaptive_update", f"attack.md_budget={budget}"]
        cfg = compose(over)
        cfg.attack.ref_quantile, cfg.attack.ref_batches = 0.9, 8  # recorded by the first rule
        cell = tmp_path / f"c{budget}"
        cell.mkdir()
        (cell / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        if reusable:  # unaware: the rule never acted, the run is the plain lambda-update
            check_cell_matches({"name": "c", "overrides": over}, cell)
        else:
            with pytest.raises(FlMdiscError, match="retired"):
                check_cell_matches({"name": "c", "overrides": over}, cell)
        fresh = tmp_path / f"new{budget}"
        fresh.mkdir()
        (fresh / "config.yaml").write_text(OmegaConf.to_yaml(compose(over)))
        check_cell_matches({"name": "c", "overrides": over}, fresh)  # cells of the current rule: reused
