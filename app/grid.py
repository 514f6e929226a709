"""``fl-mdisc grid``: does DGC generalise? Settings x strategies x attacks x seeds as one resumable sweep.

Axes (override lists): ``settings=[...]``, ``strategies=[...]`` (config names, or ``byzfl-<aggregator>[-<pre>...]``
for ByzFL's aggregators: ``byzfl-cc``, ``byzfl-geomed-nnm``; a ``@f`` suffix tells that row's server the true number
of attackers of the setting, ``assume.f``, which every other row does not know), ``attacks=[...]`` (default
``[clean, poisoned]``: names of the preset's ``tables.grid.scenarios`` — ``clean`` no attack, ``poisoned`` the
accumulative lambda-update, ``alie``, ``aware1``/``aware2`` the DGC-aware attacker at budgets 1 and 2 — or any attack
name), ``seeds=[...]``. ``tables.grid.extra`` adds scenarios for some strategies only (the history DGC against ALIE
and the DGC-aware attacker); ``extra=none`` drops them. ``missing=skip`` reports the complete cells only and lists the
others (a grid still running, or one run in parts); the default ``missing=run`` runs them.

A *setting* is a named list of overrides (the preset's ``tables.grid.settings``). Every cell is one ``flwr run``
simulation (the ``run_cells`` machinery of the table commands: complete cells are skipped, so a grid interrupted or
spread over several sittings resumes).

Per setting, strategy and scenario the report gives the mean test accuracy over the evaluations (mean and std over
seeds), the trigger drop, what the server was told (``assume.f``), and for the defences that flag updates
(:mod:`fl_mdisc.scoring`): honest FPR, precision, recall over the attackers' poisoning updates, and how many attackers
were flagged at their first participation. Outputs: ``grid.{md,csv,json,png}``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from fl_mdisc.errors import ConfigError
from .report import command_line, label, report_steps, save_figure


def grid_settings(base) -> dict[str, list[str]]:
    g = base.tables.get("grid") if base.get("tables") is not None else None
    if g is None or not g.get("settings"):
        raise ConfigError(f"preset {base.preset_name!r} defines no tables.grid.settings; use preset=cpu or add them")
    return {str(k): [str(o) for o in v] for k, v in g.settings.items()}


def strategy_overrides(name: str, true_f: int | None = None) -> list[str]:
    """A strategy axis value: a strategy config name (``dgc``), or ``byzfl-<aggregator>[-<pre>...]`` for ByzFL's
    aggregator with its pre-aggregations in order (``byzfl-geomed-nnm``: NNM, then the geometric median); ``@f``
    appends ``assume.f=<true_f>`` (the server told the setting's number of attackers)."""
    if name.endswith("@f"):
        if true_f is None:
            raise ConfigError(f"strategy {name!r}: the true number of attackers is unknown here")
        return strategy_overrides(name[:-2]) + [f"assume.f={int(true_f)}"]
    if not name.startswith("byzfl-"):
        return [f"strategy={name}"]
    agg, *pre = name.split("-")[1:]
    return ["strategy=byzfl", f"strategy.aggregator={agg}", f"strategy.pre=[{','.join(pre)}]"]


def scenario_overrides(base, name: str) -> list[str]:
    """The overrides of a scenario: the preset's ``tables.grid.scenarios[name]``, else ``attack=<name>``."""
    sc = base.tables.grid.get("scenarios") or {}
    if name in sc:
        return [str(o) for o in sc[name]]
    return [f"attack={name}"]


def scenario_of(attack: str, poison_attack: str = "lambda_update") -> str:
    """The scenario name of an attack axis value: ``clean`` (``none``), ``poisoned`` (the accumulative attack of the
    preset), else the value itself (a scenario preset or an attack name)."""
    return "clean" if attack == "none" else "poisoned" if attack == poison_attack else attack


def flag_rates(rounds: list[dict]) -> dict:
    """Honest/malicious updates a defence saw and flagged in a run's rounds.jsonl (:func:`fl_mdisc.scoring.detection`;
    zeros when no entry is flagged or not)."""
    from fl_mdisc.scoring import detection

    d = detection(rounds)
    if d is None:
        return {"honest": 0, "honest_flagged": 0, "malicious": 0, "malicious_flagged": 0}
    return {k: d[k] for k in ("honest", "honest_flagged", "malicious", "malicious_flagged")}


def _ms(vals: list) -> tuple[float | None, float | None]:
    v = [x for x in vals if x is not None]
    return (round(float(np.mean(v)), 2), round(float(np.std(v)), 2)) if v else (None, None)


def _paired_gap(pairs) -> tuple[float, int] | None:
    """Mean of ``a - b`` over the ``(a, b)`` pairs where both exist, and how many: two rows compared on the seeds
    both ran, so a partial grid compares like with like (the difference of the means when every cell ran)."""
    d = [a - b for a, b in pairs if a is not None and b is not None]
    return (round(float(np.mean(d)), 2), len(d)) if d else None


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (setting, strategy) from the loaded cells: per scenario, accuracy (mean, std over seeds) and, for
    defences that flag updates, the pooled honest FPR, precision, recall and first-sight detections."""
    from fl_mdisc.scoring import detection

    rows = []
    keys = sorted({(r["setting"], r["strategy"]) for r in runs}, key=lambda k: (k[0], k[1]))
    order = {s: i for i, s in enumerate(dict.fromkeys(r["setting"] for r in runs))}
    from .report import STRATEGY_ORDER

    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    scenarios = list(dict.fromkeys(["clean", "poisoned", *(r["scenario"] for r in runs)]))
    for setting, strat in sorted(keys, key=lambda k: (order[k[0]], rank.get(k[1].split("@")[0], 99), k[1])):
        row = {"setting": setting, "strategy": strat}
        acc = {}  # (scenario, seed) -> mean accuracy, to pair each other attack with the λ-update seed by seed
        for scen in scenarios:
            rs = [r for r in runs if (r["setting"], r["strategy"], r["scenario"]) == (setting, strat, scen)]
            if not rs:
                continue
            acc.update({(scen, r["seed"]): r["summary"].get("mean_accuracy") for r in rs})
            row[f"{scen}_seeds"] = sorted(r["seed"] for r in rs)
            row[f"{scen}_mean"], row[f"{scen}_std"] = _ms([r["summary"].get("mean_accuracy") for r in rs])
            row["assumed_f"] = rs[0]["summary"].get("assumed_f")
            if "defence_f" in rs[0]["summary"]:
                row["defence_f"] = rs[0]["summary"]["defence_f"]
            if scen == "poisoned":
                row["trigger_drop"], _ = _ms([r["summary"].get("trigger_drop") for r in rs])
            dets = [detection(r["rounds"]) for r in rs]
            if any(d is not None for d in dets):
                dets = [d for d in dets if d is not None]
                tot = {k: sum(d[k] for d in dets) for k in ("honest", "honest_flagged", "malicious", "malicious_flagged")}
                row[f"{scen}_honest_fpr"] = round(tot["honest_flagged"] / tot["honest"], 4) if tot["honest"] else None
                row[f"{scen}_honest_fpr_per_seed"] = [None if d["honest_fpr"] is None else round(d["honest_fpr"], 4)
                                                     for d in dets]
                if tot["malicious"]:
                    flagged = tot["honest_flagged"] + tot["malicious_flagged"]
                    row[f"{scen}_recall"] = round(tot["malicious_flagged"] / tot["malicious"], 4)
                    row[f"{scen}_recall_per_seed"] = [None if d["recall"] is None else round(d["recall"], 4) for d in dets]
                    row[f"{scen}_precision"] = round(tot["malicious_flagged"] / flagged, 4) if flagged else None
                    row[f"{scen}_precision_per_seed"] = [None if d["precision"] is None else round(d["precision"], 4)
                                                        for d in dets]
                    firsts = [(d["first_seen"][p], d["first_flag"][p]) for d in dets for p in d["first_seen"]]
                    row[f"{scen}_attackers"] = len(firsts)
                    row[f"{scen}_first_sight"] = sum(1 for seen, fl in firsts if fl == seen)
                    row[f"{scen}_never_flagged"] = sum(1 for _seen, fl in firsts if fl is None)
                    row[f"{scen}_first_flag"] = [fl for _seen, fl in firsts]
        for scen in scenarios[2:]:  # another attack's accuracy minus the λ-update's, on the seeds both ran
            gap = _paired_gap([(acc[(scen, s)], acc.get(("poisoned", s))) for s in row.get(f"{scen}_seeds", [])])
            if gap:
                row[f"{scen}_vs_poisoned"], row[f"{scen}_vs_poisoned_seeds"] = gap
        if "poisoned_recall" in row:  # the names earlier reports used
            row["recall"] = row["poisoned_recall"]
        rows.append(row)
    return rows


def per_seed_rows(runs: list[dict]) -> list[dict]:
    """One row per (setting, seed): each strategy's clean and poisoned mean accuracy, and each flagging defence's
    honest FPR on the clean stream and its recall and precision under poisoning (a claim must hold on every burn-in
    seed, not only on the mean)."""
    from fl_mdisc.scoring import detection

    out = []
    order = {s: i for i, s in enumerate(dict.fromkeys(r["setting"] for r in runs))}
    for setting, seed in sorted({(r["setting"], r["seed"]) for r in runs}, key=lambda k: (order[k[0]], k[1])):
        row = {"setting": setting, "seed": seed}
        for r in runs:
            if (r["setting"], r["seed"]) != (setting, seed) or r["scenario"] not in ("clean", "poisoned"):
                continue
            row[f"{r['scenario']}_{r['strategy']}"] = r["summary"].get("mean_accuracy")
            d = detection(r["rounds"])
            if d is None:
                continue
            if r["scenario"] == "clean":
                row[f"fpr_{r['strategy']}"] = None if d["honest_fpr"] is None else round(d["honest_fpr"], 4)
            else:
                row[f"recall_{r['strategy']}"] = None if d["recall"] is None else round(d["recall"], 4)
                row[f"precision_{r['strategy']}"] = None if d["precision"] is None else round(d["precision"], 4)
                row[f"poisoned_fpr_{r['strategy']}"] = None if d["honest_fpr"] is None else round(d["honest_fpr"], 4)
        out.append(row)
    return out


def targets(rows: list[dict], per_seed: list[dict], strategy: str, fpr: float = 0.02, recall: float = 0.9,
            precision: float = 0.9, margin: float = 0.3) -> list[dict]:
    """The history DGC's targets (issue 26), checked per (setting, seed) and per setting, each with by how much:
    clean honest FPR <= ``fpr``; recall and precision >= ``recall`` / ``precision`` under poisoning; poisoned accuracy
    >= every other row's minus ``margin`` and clean accuracy within ``margin`` of GC, as the mean over the seeds on
    which both rows ran of the per-seed difference (the difference of the means when every cell ran)."""
    out = []
    for r in per_seed:
        f, rc, pr = r.get(f"fpr_{strategy}"), r.get(f"recall_{strategy}"), r.get(f"precision_{strategy}")
        if f is None and rc is None:
            continue
        out.append({"setting": r["setting"], "seed": r["seed"], "clean_fpr": f, "fpr_ok": None if f is None else f <= fpr,
                    "recall": rc, "recall_ok": None if rc is None else rc >= recall,
                    "precision": pr, "precision_ok": None if pr is None else pr >= precision})
    for setting in dict.fromkeys(r["setting"] for r in rows):
        seeds = [r for r in per_seed if r["setting"] == setting]
        others = sorted({k[len("poisoned_"):] for r in seeds for k in r if k.startswith("poisoned_")
                         and not k.startswith("poisoned_fpr_") and k != f"poisoned_{strategy}"})
        gaps = {o: g for o in others
                if (g := _paired_gap([(r.get(f"poisoned_{strategy}"), r.get(f"poisoned_{o}")) for r in seeds]))}
        clean = _paired_gap([(r.get(f"clean_{strategy}"), r.get("clean_gc")) for r in seeds])
        if not gaps and not clean:
            continue
        best = min(gaps, key=lambda o: gaps[o][0], default=None)
        gap, n = gaps[best] if best else (None, 0)
        cgap, cn = clean or (None, 0)
        out.append({"setting": setting, "seed": "mean", "best_other": best, "poisoned_gap": gap, "poisoned_seeds": n,
                    "poisoned_ok": None if gap is None else gap >= -margin, "clean_gap_vs_gc": cgap,
                    "clean_seeds": cn, "clean_ok": None if cgap is None else abs(cgap) <= margin})
    return out


def _f(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def _ok(v) -> str:
    return "–" if v is None else "yes" if v else "**no**"


def grid_markdown(doc: dict) -> str:
    lines = [f"# Does DGC generalise? (`fl-mdisc grid`, preset {doc['preset']}, {doc['rounds']} rounds, "
             f"seeds {doc['seeds']})", "",
             "Mean test accuracy (%) over the evaluations of rounds 1..R (every "
             f"{doc['eval_every']} rounds, full test set), mean ± std over seeds; trigger drop = accuracy at round R "
             "minus after the trigger round. For the defences that flag updates, over the accumulation rounds of all "
             "seeds: FPR = flagged honest updates / honest updates (clean stream, and under poisoning); precision = "
             "flagged attacker updates / flagged updates; recall = flagged attacker updates / the attackers' poisoning "
             "updates; first sight = attackers flagged at their first participation / attackers. \"server told\": "
             "the bound on attackers the defence was given (`assume.f`); \"–\" = nothing.", ""]
    for name, over in doc["settings"].items():
        lines.append(f"* `{name}`: `{' '.join(over) or '(the preset: 5 clients, IID, all every round)'}`")
    lines += ["", "| setting | strategy | server told | clean | poisoned | trigger drop | FPR clean | FPR poisoned | "
              "precision | recall | first sight |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def ms(r, scen):
        m, s, seeds = r.get(f"{scen}_mean"), r.get(f"{scen}_std"), r.get(f"{scen}_seeds", [])
        if m is None:
            return "–"
        text = f"{m:.2f} ± {s:.2f}" if len(seeds) > 1 else f"{m:.2f}"
        # a partial grid: say which seeds each mean is over (rows may differ)
        return text + f" (s{','.join(str(x) for x in seeds)})" if doc.get("not_run") else text

    def sight(r, scen):
        n = r.get(f"{scen}_attackers")
        return "–" if not n else f"{r[f'{scen}_first_sight']}/{n}"

    for r in doc["rows"]:
        told = "–" if r.get("assumed_f") is None else f"f = {r['assumed_f']}"
        lines.append(f"| {r['setting']} | {label(r['strategy'])} | {told} | {ms(r, 'clean')} | {ms(r, 'poisoned')} | "
                     f"{_f(r.get('trigger_drop'))} | {_f(r.get('clean_honest_fpr'), 3)} | "
                     f"{_f(r.get('poisoned_honest_fpr'), 3)} | {_f(r.get('poisoned_precision'), 3)} | "
                     f"{_f(r.get('poisoned_recall'), 3)} | {sight(r, 'poisoned')} |")
    extra = [a for a in doc.get("scenarios", ["clean", "poisoned"]) if a not in ("clean", "poisoned")]
    if extra:
        lines += ["", "Other attacks (scenario names from the preset's `tables.grid.scenarios`); vs λ-update = this "
                  "attack's accuracy minus the same strategy's under the λ-update, mean over the seeds both ran "
                  "(negative: this attack costs the model more):", "",
                  "| setting | strategy | attack | accuracy | vs λ-update (seeds) | FPR | precision | recall | first sight |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in doc["rows"]:
            for a in extra:
                if r.get(f"{a}_mean") is None:
                    continue
                vs = r.get(f"{a}_vs_poisoned")
                vs = "–" if vs is None else f"{vs:+.2f} ({r[f'{a}_vs_poisoned_seeds']})"
                lines.append(f"| {r['setting']} | {label(r['strategy'])} | {a} | {ms(r, a)} | {vs} | "
                             f"{_f(r.get(f'{a}_honest_fpr'), 3)} | {_f(r.get(f'{a}_precision'), 3)} | "
                             f"{_f(r.get(f'{a}_recall'), 3)} | {sight(r, a)} |")
    if doc.get("targets"):
        t = doc["target_rule"]
        lines += ["", f"Targets of {label(doc['target_strategy'])} (issue 26): clean FPR <= {t['fpr']}, recall >= "
                  f"{t['recall']} and precision >= {t['precision']} in every (setting, seed); poisoned accuracy >= "
                  f"every other row's - {t['margin']} and clean accuracy within {t['margin']} of GC (means over seeds):",
                  "", "| setting | seed | clean FPR | ok | recall | ok | precision | ok |", "|---|---|---|---|---|---|---|---|"]
        for x in doc["targets"]:
            if x["seed"] != "mean":
                lines.append(f"| {x['setting']} | {x['seed']} | {_f(x['clean_fpr'], 3)} | {_ok(x['fpr_ok'])} | "
                             f"{_f(x['recall'], 3)} | {_ok(x['recall_ok'])} | {_f(x['precision'], 3)} | "
                             f"{_ok(x['precision_ok'])} |")
        lines += ["", "Accuracy gaps: mean over the seeds both rows ran of the per-seed difference.", "",
                  "| setting | closest other row (poisoned) | poisoned gap | seeds | ok | clean gap to GC | seeds | ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for x in doc["targets"]:
            if x["seed"] == "mean":
                lines.append(f"| {x['setting']} | {label(x['best_other']) if x['best_other'] else '–'} | "
                             f"{_f(x['poisoned_gap'])} | {x.get('poisoned_seeds', '–')} | {_ok(x['poisoned_ok'])} | "
                             f"{_f(x['clean_gap_vs_gc'])} | {x.get('clean_seeds', '–')} | {_ok(x['clean_ok'])} |")
    if len(doc["seeds"]) > 1 and doc.get("per_seed"):
        lines += per_seed_markdown(doc["per_seed"], list(doc.get("strategies") or []))
    if doc.get("not_run"):
        lines += ["", f"Not run ({len(doc['not_run'])} cells of this grid, `missing=skip`): "
                  + ", ".join(f"`{n}`" for n in doc["not_run"]) + "."]
    lines += ["", f"Accuracy at evaluated rounds {doc['steps']} (mean over seeds) is in grid.json / grid.csv.",
              f"Command: `{doc['command']}`"]
    return "\n".join(lines) + "\n"


def per_seed_markdown(rows: list[dict], strategies: list[str]) -> list[str]:
    strats = [s for s in strategies if any(f"poisoned_{s}" in r or f"clean_{s}" in r for r in rows)]
    flaggers = [s for s in strats if any(f"fpr_{s}" in r or f"recall_{s}" in r for r in rows)]
    lines = ["", "Per seed (mean accuracy over the evaluations, clean / poisoned; FPR on the clean stream, recall under "
             "poisoning):", "",
             "| setting | seed | " + " | ".join(label(s) for s in strats) + " | "
             + " | ".join(f"{label(s)} FPR / recall" for s in flaggers) + " |",
             "|---|---|" + "---|" * (len(strats) + len(flaggers))]
    for r in rows:
        cells = [f"{_f(r.get(f'clean_{s}'))} / {_f(r.get(f'poisoned_{s}'))}" for s in strats]
        cells += [f"{_f(r.get(f'fpr_{s}'), 3)} / {_f(r.get(f'recall_{s}'), 3)}" for s in flaggers]
        lines.append(f"| {r['setting']} | {r['seed']} | " + " | ".join(cells) + " |")
    return lines


def plot_grid(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(doc["settings"])
    strategies = list(dict.fromkeys(r["strategy"] for r in doc["rows"]))
    scens = list(doc.get("scenarios", ["clean", "poisoned"]))
    if len(settings) == 1 and len(scens) > 2:  # one setting, many attacks: one panel, attacks on the x axis
        fig, ax = plt.subplots(figsize=(2.2 * len(scens) + 2, 4.2))
        w = 0.8 / max(1, len(strategies))
        for i, strat in enumerate(strategies):
            row = next((r for r in doc["rows"] if r["strategy"] == strat), {})
            m = [row.get(f"{sc}_mean") for sc in scens]
            e = [row.get(f"{sc}_std") for sc in scens]
            x = np.arange(len(scens)) + (i - (len(strategies) - 1) / 2) * w
            ax.bar(x, [np.nan if v is None else v for v in m], w, yerr=[0 if v is None else v for v in e],
                   label=label(strat), capsize=2)
        ax.set_xticks(np.arange(len(scens)))
        ax.set_xticklabels(["clean" if sc == "clean" else f"{doc.get('poison_attack', 'poisoned')}" if sc == "poisoned"
                            else sc for sc in scens])
        ax.set_ylabel("mean test accuracy over evaluations (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title(f"{settings[0]}: strategies x attacks (preset {doc['preset']}, {doc['rounds']} rounds, "
                     f"seeds {doc['seeds']})")
        save_figure(fig, path)
        return
    fig, axes = plt.subplots(1, len(scens), figsize=(6.5 * len(scens), 4.2), sharey=True, squeeze=False)
    axes = axes[0]
    w = 0.8 / max(1, len(strategies))
    for ax, scen in zip(axes, scens):
        for i, strat in enumerate(strategies):
            m = [next((r.get(f"{scen}_mean") for r in doc["rows"] if r["setting"] == s and r["strategy"] == strat), None)
                 for s in settings]
            e = [next((r.get(f"{scen}_std") for r in doc["rows"] if r["setting"] == s and r["strategy"] == strat), None)
                 for s in settings]
            x = np.arange(len(settings)) + (i - (len(strategies) - 1) / 2) * w
            ax.bar(x, [np.nan if v is None else v for v in m], w, yerr=[0 if v is None else v for v in e],
                   label=label(strat), capsize=2)
        ax.set_xticks(np.arange(len(settings)))
        ax.set_xticklabels(settings, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{scen}: mean accuracy over evaluations")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        lo = [r.get(f"{s}_mean") for r in doc["rows"] for s in scens if r.get(f"{s}_mean") is not None]
        if lo:
            ax.set_ylim(max(0, min(lo) - 10), min(100, max(lo) + 5))
    axes[0].legend(fontsize=8)
    save_figure(fig, path, f"fl-mdisc grid (preset {doc['preset']}, {doc['rounds']} rounds, seeds {doc['seeds']})")


def grid(overrides: list[str], quiet: bool = True) -> dict:
    """``fl-mdisc grid``: build the cells (:func:`grid_cells`), run the missing ones (``missing=run``) or report the
    complete ones only (``missing=skip``), then write ``grid.{json,md,csv,png}`` (:func:`write_grid`)."""
    from .tables import load_run, run_cells

    command = command_line("grid", overrides)
    plan = grid_cells(overrides)
    cells, out = plan["cells"], plan["out"]
    not_run = []
    if plan["missing"] == "run":
        run_cells(cells, quiet)
    else:
        not_run = [c["name"] for c in cells if not (Path(c["out_dir"]) / "summary.json").is_file()]
        cells = [c for c in cells if c["name"] not in not_run]
        if not cells:
            raise ConfigError(f"missing=skip: no complete cell under {out / 'cells'}; run the grid first")
    runs = [load_run(c) for c in cells]
    R, eval_every, strategies = plan["rounds"], plan["eval_every"], plan["strategies"]
    steps = report_steps(R, eval_every)
    target = "dgc" if "dgc" in strategies else None
    rows, per_seed = summarise(runs), per_seed_rows(runs)
    rule = {"fpr": 0.02, "recall": 0.9, "precision": 0.9, "margin": 0.3}
    doc = {"preset": plan["preset"], "rounds": R, "eval_every": eval_every, "seeds": plan["seeds"],
           "settings": plan["settings"], "true_f": plan["true_f"], "strategies": strategies, "steps": steps,
           "scenarios": plan["scenarios"],
           "rows": rows, "per_seed": per_seed,
           "target_strategy": target, "target_rule": rule,
           "targets": targets(rows, per_seed, target, **rule) if target else [],
           "accuracy_at_steps": [{"setting": r["setting"], "scenario": r["scenario"], "strategy": r["strategy"],
                                  "seed": r["seed"], "accuracy": [next((m["accuracy"] for m in r["metrics"]
                                                                        if m["round"] == s and m.get("phase") != "trigger"), None)
                                                                  for s in steps]} for r in runs],
           "not_run": not_run, "command": command}
    write_grid(doc, out)
    return doc


def grid_cells(overrides: list[str]) -> dict:
    """Parse the grid's arguments (settings, strategies, attacks, extra, seeds, missing, out_dir) and build every
    cell's overrides, each validated before the first cell starts."""
    from fl_mdisc.config import compose
    from .tables import _get, pop_list

    seeds, overrides = pop_list(overrides, "seeds", [0])
    missing = _get(overrides, "missing") or "run"
    if missing not in ("run", "skip"):
        raise ConfigError(f"missing={missing!r}: use missing=run (run the cells not yet complete) or missing=skip "
                          f"(report the complete cells only)")
    overrides = [o for o in overrides if not o.startswith("missing=")]
    base = compose([o for o in overrides if not o.startswith(("out_dir=", "settings=", "strategies=", "attacks=",
                                                              "extra="))])
    all_settings = grid_settings(base)
    names, overrides = pop_list(overrides, "settings", list(all_settings))
    unknown = [s for s in names if s not in all_settings]
    if unknown:
        raise ConfigError(f"unknown grid setting(s) {unknown}; choose from {list(all_settings)}")
    strategies, overrides = pop_list(overrides, "strategies", [str(s) for s in base.tables.grid.strategies])
    attacks, overrides = pop_list(overrides, "attacks", ["clean", "poisoned"])
    scenarios = [scenario_of(a, "lambda_update") for a in attacks]
    extra_arg = _get(overrides, "extra")
    overrides = [o for o in overrides if not o.startswith("extra=")]
    extra = {} if extra_arg == "none" else {str(k): [str(a) for a in v]
                                            for k, v in (base.tables.grid.get("extra") or {}).items()}
    rest = [o for o in overrides if not o.startswith("out_dir=")]
    if _get(rest, "num_rounds") is None:
        rest.append(f"num_rounds={int(base.tables.grid.rounds)}")
    out = Path(_get(overrides, "out_dir") or f"outputs/grid-{base.preset_name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the true number of attackers of each setting: for the scoring, and for the "@f" rows only (told on purpose)
    true_f = {n: int(compose(rest + all_settings[n] + scenario_overrides(base, "poisoned")).fed.num_malicious)
              for n in names}
    pairs = [(strat, scen, scen_name) for scen, scen_name in zip(attacks, scenarios) for strat in strategies]
    pairs += [(strat, a, scenario_of(a, "lambda_update")) for strat, extras in extra.items() if strat in strategies
              for a in extras if a not in attacks]
    cells = []
    for seed in seeds:  # seed-major: a first full seed comes before the next one starts
        for name in names:
            for strat, scen, scen_name in pairs:
                cell = f"{name}-{scen_name}-{strat}-s{seed}"
                cells.append({"name": cell, "setting": name, "scenario": scen_name, "strategy": strat,
                              "seed": int(seed), "attack": scen, "out_dir": str(out / "cells" / cell),
                              "overrides": rest + all_settings[name] + strategy_overrides(strat, true_f[name])
                              + scenario_overrides(base, scen) + [f"seed={seed}"]})
    for c in cells:
        compose(c["overrides"])
    return {"cells": cells, "out": out, "missing": missing, "seeds": [int(s) for s in seeds],
            "rounds": int(_get(rest, "num_rounds")), "eval_every": int(_get(rest, "eval_every") or base.eval_every),
            "strategies": strategies, "preset": str(base.preset_name), "true_f": true_f,
            "settings": {n: all_settings[n] for n in names}, "scenarios": list(dict.fromkeys(s for _a, _b, s in pairs))}


def write_grid(doc: dict, out: Path) -> None:
    """``grid.json``, ``grid.md``, ``grid.csv`` and ``grid.png`` of a grid report."""
    (out / "grid.json").write_text(json.dumps(doc, indent=1))
    (out / "grid.md").write_text(grid_markdown(doc))
    with open(out / "grid.csv", "w", newline="") as f:
        w = csv.writer(f)
        cols = ["setting", "strategy", "assumed_f", "clean_mean", "clean_std", "poisoned_mean", "poisoned_std",
                "trigger_drop", "clean_honest_fpr", "poisoned_honest_fpr", "poisoned_precision", "poisoned_recall",
                "poisoned_first_sight", "poisoned_attackers"]
        w.writerow(cols)
        for r in doc["rows"]:
            w.writerow([r.get(c) for c in cols])
    plot_grid(doc, out / "grid.png")
    print((out / "grid.md").read_text())
    print(f"fl-mdisc: grid written to {out}")
