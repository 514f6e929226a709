"""``fl-mdisc grid``: does DGC generalise? Settings x strategies x attacks x seeds as one resumable sweep.

Axes (override lists): ``settings=[...]``, ``strategies=[...]`` (config names, or ``byzfl-<aggregator>[-<pre>...]``
for ByzFL's aggregators: ``byzfl-cc``, ``byzfl-geomed-nnm``), ``attacks=[...]`` (default ``[none, lambda_update]``,
reported as the scenarios ``clean`` and ``poisoned``; the reference attacks ``alie``, ``ipm``, ... add a column each),
``seeds=[...]``.

A *setting* is a named list of overrides (the preset's ``tables.grid.settings``: IID with 5 clients, Dirichlet
alpha 0.5 and 0.1 with 10, IID and Dirichlet with 100 clients of which 10 take part per round and 10 % are
attackers, FedAvg with 5 local steps). Every cell is one ``flwr run`` simulation (the ``run_cells`` machinery of
the table commands: complete cells are skipped, so a grid interrupted or spread over several sittings resumes).

Per setting and strategy the report gives the mean test accuracy over the evaluations (clean and poisoned, mean
and std over seeds), the trigger drop, and for DGC the share of honest updates it flagged on the clean stream
(false-positive rate) and the share of the attackers' updates it flagged under poisoning (recall). Step columns
are always evaluated rounds (:func:`app.report.report_steps`). Outputs: ``grid.{md,csv,json,png}``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from fl_mdisc.errors import ConfigError
from .report import label, report_steps


def grid_settings(base) -> dict[str, list[str]]:
    g = base.tables.get("grid") if base.get("tables") is not None else None
    if g is None or not g.get("settings"):
        raise ConfigError(f"preset {base.preset_name!r} defines no tables.grid.settings; use preset=cpu or add them")
    return {str(k): [str(o) for o in v] for k, v in g.settings.items()}


def strategy_overrides(name: str) -> list[str]:
    """A strategy axis value: a strategy config name (``dgc``), or ``byzfl-<aggregator>[-<pre>...]`` for ByzFL's
    aggregator with its pre-aggregations in order (``byzfl-geomed-nnm``: NNM, then the geometric median)."""
    if not name.startswith("byzfl-"):
        return [f"strategy={name}"]
    agg, *pre = name.split("-")[1:]
    return ["strategy=byzfl", f"strategy.aggregator={agg}", f"strategy.pre=[{','.join(pre)}]"]


def scenario_of(attack: str, poison_attack: str) -> str:
    """The scenario name of an attack axis value: ``clean`` (none), ``poisoned`` (the accumulative attack of the
    preset, as in every earlier grid), else the attack's name."""
    return "clean" if attack == "none" else "poisoned" if attack == poison_attack else attack


def flag_rates(rounds: list[dict]) -> dict:
    """Honest/malicious updates DGC saw and flagged in a run's rounds.jsonl (trigger round excluded)."""
    hon = mal = hon_f = mal_f = 0
    for r in rounds:
        if r.get("phase") == "trigger":
            continue
        for c in r["clients"]:
            if "flagged" not in c:
                continue
            if c.get("malicious"):
                mal += 1
                mal_f += bool(c["flagged"])
            else:
                hon += 1
                hon_f += bool(c["flagged"])
    return {"honest": hon, "honest_flagged": hon_f, "malicious": mal, "malicious_flagged": mal_f}


def _ms(vals: list) -> tuple[float | None, float | None]:
    v = [x for x in vals if x is not None]
    return (round(float(np.mean(v)), 2), round(float(np.std(v)), 2)) if v else (None, None)


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (setting, strategy) from the loaded cells."""
    rows = []
    keys = sorted({(r["setting"], r["strategy"]) for r in runs}, key=lambda k: (k[0], k[1]))
    order = {s: i for i, s in enumerate(dict.fromkeys(r["setting"] for r in runs))}
    from .report import STRATEGY_ORDER

    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    scenarios = list(dict.fromkeys(["clean", "poisoned", *(r["scenario"] for r in runs)]))
    for setting, strat in sorted(keys, key=lambda k: (order[k[0]], rank.get(k[1], 99), k[1])):
        row = {"setting": setting, "strategy": strat}
        for scen in scenarios:
            rs = [r for r in runs if (r["setting"], r["strategy"], r["scenario"]) == (setting, strat, scen)]
            row[f"{scen}_seeds"] = sorted(r["seed"] for r in rs)
            row[f"{scen}_mean"], row[f"{scen}_std"] = _ms([r["summary"].get("mean_accuracy") for r in rs])
            if scen == "poisoned":
                row["trigger_drop"], _ = _ms([r["summary"].get("trigger_drop") for r in rs])
            rates = [flag_rates(r["rounds"]) for r in rs]
            if any(x["honest"] for x in rates):
                hon = sum(x["honest"] for x in rates)
                row[f"{scen}_honest_fpr"] = round(sum(x["honest_flagged"] for x in rates) / hon, 4) if hon else None
                mal = sum(x["malicious"] for x in rates)
                if scen == "poisoned":
                    row["recall"] = round(sum(x["malicious_flagged"] for x in rates) / mal, 4) if mal else None
                elif scen != "clean":
                    row[f"{scen}_recall"] = round(sum(x["malicious_flagged"] for x in rates) / mal, 4) if mal else None
                row[f"{scen}_honest_fpr_per_seed"] = [round(x["honest_flagged"] / x["honest"], 4) if x["honest"] else None
                                                     for x in rates]
        rows.append(row)
    return rows


def per_seed_rows(runs: list[dict]) -> list[dict]:
    """One row per (setting, seed): each strategy's clean and poisoned mean accuracy, DGC's honest FPR on the clean
    stream and its recall under poisoning, and whether DGC > GC > ST held under poisoning on that seed (a claim
    must hold on every burn-in seed, not only on the mean)."""
    out = []
    order = {s: i for i, s in enumerate(dict.fromkeys(r["setting"] for r in runs))}
    for setting, seed in sorted({(r["setting"], r["seed"]) for r in runs}, key=lambda k: (order[k[0]], k[1])):
        row = {"setting": setting, "seed": seed}
        for r in runs:
            if (r["setting"], r["seed"]) != (setting, seed) or r["scenario"] not in ("clean", "poisoned"):
                continue
            row[f"{r['scenario']}_{r['strategy']}"] = r["summary"].get("mean_accuracy")
            if r["strategy"] == "dgc":
                x = flag_rates(r["rounds"])
                if r["scenario"] == "clean":
                    row["clean_dgc_fpr"] = round(x["honest_flagged"] / x["honest"], 4) if x["honest"] else None
                elif x["malicious"]:
                    row["recall"] = round(x["malicious_flagged"] / x["malicious"], 4)
        p = [row.get(f"poisoned_{k}") for k in ("dgc", "gc", "st")]
        row["dgc_gt_gc_gt_st"] = None if None in p else bool(p[0] > p[1] > p[2])
        out.append(row)
    return out


def per_seed_markdown(rows: list[dict], strategies: list[str]) -> list[str]:
    from .report import label

    strats = [s for s in strategies if any(f"poisoned_{s}" in r or f"clean_{s}" in r for r in rows)]
    lines = ["", "Per seed (mean accuracy over the evaluations, clean / poisoned):", "",
             "| setting | seed | " + " | ".join(label(s) for s in strats)
             + " | DGC FPR clean | DGC − GC clean | recall | DGC > GC > ST |",
             "|---|---|" + "---|" * len(strats) + "---|---|---|---|"]
    for r in rows:
        cells = [f"{_f(r.get(f'clean_{s}'))} / {_f(r.get(f'poisoned_{s}'))}" for s in strats]
        c_d, c_g = r.get("clean_dgc"), r.get("clean_gc")
        diff = None if c_d is None or c_g is None else c_d - c_g
        ok = r.get("dgc_gt_gc_gt_st")
        lines.append(f"| {r['setting']} | {r['seed']} | " + " | ".join(cells)
                     + f" | {_f(r.get('clean_dgc_fpr'), 3)} | {_f(diff)} | {_f(r.get('recall'), 3)} | "
                     + ("–" if ok is None else "yes" if ok else "**no**") + " |")
    return lines


def _f(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def grid_markdown(doc: dict) -> str:
    lines = [f"# Does DGC generalise? (`fl-mdisc grid`, preset {doc['preset']}, {doc['rounds']} rounds, "
             f"seeds {doc['seeds']})", "",
             "Mean test accuracy (%) over the evaluations of rounds 1..R (every "
             f"{doc['eval_every']} rounds, full test set), mean ± std over seeds; trigger drop = accuracy at round R "
             "minus after the trigger round; DGC FPR = share of honest updates DGC flagged (clean stream, and under "
             "poisoning); recall = share of the attackers' updates it flagged.", ""]
    for name, over in doc["settings"].items():
        lines.append(f"* `{name}`: `{' '.join(over) or '(the preset: 5 clients, IID, all every round)'}`")
    extra = [a for a in doc.get("scenarios", ["clean", "poisoned"]) if a not in ("clean", "poisoned")]
    head = "| setting | strategy | clean | poisoned | trigger drop | DGC FPR clean | DGC FPR poisoned | recall |"
    head += "".join(f" {a} | {a} recall |" for a in extra)
    lines += ["", head, "|---|---|---|---|---|---|---|---|" + "---|---|" * len(extra)]
    for r in doc["rows"]:
        def ms(scen):
            m, s = r.get(f"{scen}_mean"), r.get(f"{scen}_std")
            return "–" if m is None else (f"{m:.2f} ± {s:.2f}" if len(r.get(f"{scen}_seeds", [])) > 1 else f"{m:.2f}")
        lines.append(f"| {r['setting']} | {label(r['strategy'])} | {ms('clean')} | {ms('poisoned')} | "
                     f"{_f(r.get('trigger_drop'))} | {_f(r.get('clean_honest_fpr'), 3)} | "
                     f"{_f(r.get('poisoned_honest_fpr'), 3)} | {_f(r.get('recall'), 3)} |"
                     + "".join(f" {ms(a)} | {_f(r.get(f'{a}_recall'), 3)} |" for a in extra))
    if len(doc["seeds"]) > 1 and doc.get("per_seed"):
        lines += per_seed_markdown(doc["per_seed"], list(doc.get("strategies") or []))
    lines += ["", f"Accuracy at evaluated rounds {doc['steps']} (mean over seeds) is in grid.json / grid.csv.",
              f"Command: `{doc['command']}`"]
    return "\n".join(lines) + "\n"


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
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
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
    fig.suptitle(f"fl-mdisc grid (preset {doc['preset']}, {doc['rounds']} rounds, seeds {doc['seeds']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid(overrides: list[str], quiet: bool = True) -> dict:
    from fl_mdisc.config import compose
    from .tables import _get, load_run, pop_list, run_cells

    command = "fl-mdisc grid " + " ".join(overrides)
    seeds, overrides = pop_list(overrides, "seeds", [0])
    base = compose([o for o in overrides if not o.startswith(("out_dir=", "settings=", "strategies=", "scenarios=",
                                                              "attacks=", "poison_attack="))])
    all_settings = grid_settings(base)
    names, overrides = pop_list(overrides, "settings", list(all_settings))
    unknown = [s for s in names if s not in all_settings]
    if unknown:
        raise ConfigError(f"unknown grid setting(s) {unknown}; choose from {list(all_settings)}")
    strategies, overrides = pop_list(overrides, "strategies", [str(s) for s in base.tables.grid.strategies])
    poison_attack = _get(overrides, "poison_attack") or "lambda_update"
    overrides = [o for o in overrides if not o.startswith("poison_attack=")]
    attacks, overrides = pop_list(overrides, "attacks", ["none", poison_attack])
    scenarios, overrides = pop_list(overrides, "scenarios", [scenario_of(a, poison_attack) for a in attacks])
    attack_of = {scenario_of(a, poison_attack): a for a in attacks} | {"clean": "none", "poisoned": poison_attack}
    rest = [o for o in overrides if not o.startswith("out_dir=")]
    if _get(rest, "num_rounds") is None:
        rest.append(f"num_rounds={int(base.tables.grid.rounds)}")
    R = int(_get(rest, "num_rounds"))
    eval_every = int(_get(rest, "eval_every") or base.eval_every)
    out = Path(_get(overrides, "out_dir") or f"outputs/grid-{base.preset_name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for seed in seeds:  # seed-major: a first full seed comes before the next one starts
        for name in names:
            for scen in scenarios:
                for strat in strategies:
                    att = attack_of.get(scen, scen)
                    cell = f"{name}-{scen}-{strat}-s{seed}"
                    cells.append({"name": cell, "setting": name, "scenario": scen, "strategy": strat, "seed": int(seed),
                                  "attack": att, "out_dir": str(out / "cells" / cell),
                                  "overrides": rest + all_settings[name] + strategy_overrides(strat)
                                  + [f"attack={att}", f"seed={seed}"]})
    for c in cells:  # every cell's config is valid before the first one starts
        compose(c["overrides"])
    run_cells(cells, quiet)
    runs = [load_run(c) for c in cells]
    steps = report_steps(R, eval_every)
    doc = {"preset": str(base.preset_name), "rounds": R, "eval_every": eval_every, "seeds": [int(s) for s in seeds],
           "settings": {n: all_settings[n] for n in names}, "strategies": strategies, "steps": steps,
           "scenarios": scenarios,
           "poison_attack": poison_attack, "rows": summarise(runs), "per_seed": per_seed_rows(runs),
           "accuracy_at_steps": [{"setting": r["setting"], "scenario": r["scenario"], "strategy": r["strategy"],
                                  "seed": r["seed"], "accuracy": [next((m["accuracy"] for m in r["metrics"]
                                                                        if m["round"] == s and m.get("phase") != "trigger"), None)
                                                                  for s in steps]} for r in runs],
           "command": command}
    (out / "grid.json").write_text(json.dumps(doc, indent=1))
    (out / "grid.md").write_text(grid_markdown(doc))
    with open(out / "grid.csv", "w", newline="") as f:
        w = csv.writer(f)
        cols = ["setting", "strategy", "clean_mean", "clean_std", "poisoned_mean", "poisoned_std", "trigger_drop",
                "clean_honest_fpr", "poisoned_honest_fpr", "recall"]
        w.writerow(cols)
        for r in doc["rows"]:
            w.writerow([r.get(c) for c in cols])
    plot_grid(doc, out / "grid.png")
    print((out / "grid.md").read_text())
    print(f"fl-mdisc: grid written to {out}")
    return doc
