"""``fl-mdisc adaptive``: does DGC force the DGC-aware attacker into harmlessness, or can it be evaded?

Sweeps the attacker's budget (``budgets=[unaware,2,1,0.5]``: ``unaware`` is the plain lambda-update, a number is
``attack.md_budget``, a multiple of the threshold the attacker estimates with DGC's own calibration rule: 1 aims at
it, 2 exceeds it, 0.5 keeps a margin; :mod:`fl_mdisc.adaptive`) against ``strategies=[st,gc,dgc,multikrum]`` and ``seeds`` in the
federated protocol (the preset's 5-client federation unless overridden; 50 rounds + trigger, like the grid). Per
budget and strategy: mean test accuracy over the evaluations, trigger drop, DGC's recall and precision, and the
attacker's mean sent update norm and scale (what the budget leaves of its update). Outputs ``adaptive.{md,csv,json,
png}``. The curve a reader needs: as the budget tightens, DGC's recall falls (the attacker hides) and so should the
damage (it hides by shrinking); DGC is evaded where the damage stays while the recall falls.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from fl_mdisc.errors import ConfigError
from .report import command_line, label, save_figure


def _budget_name(b) -> str:
    return "unaware" if b is None else f"{b:g}"


def attacker_stats(rounds: list[dict]) -> dict:
    """Over the poisoning rounds: the attackers' mean sent norm, scale (1 when unaware) and estimate, and DGC's recall
    and precision in the one convention of :func:`fl_mdisc.scoring.detection` (None without per-client flags)."""
    from fl_mdisc.scoring import detection

    norm, scale, est = [], [], []
    for r in rounds:
        if r.get("phase") == "trigger":
            continue
        for c in r["clients"]:
            if c.get("malicious") and "attack-norm" in c:
                norm.append(c["attack-norm"])
                scale.append(c.get("attack-scale", 1.0))
                if "attack-md-est" in c:
                    est.append(c["attack-md-est"])
    det = detection(rounds) or {}
    mean = (lambda v: round(float(np.mean(v)), 4) if v else None)
    return {"norm": mean(norm), "scale": mean(scale), "md_est": mean(est), "recall": det.get("recall"),
            "precision": det.get("precision")}


def _ms(vals):
    v = [x for x in vals if x is not None]
    return (round(float(np.mean(v)), 4), round(float(np.std(v)), 4)) if v else (None, None)


def adaptive_rows(runs: list[dict]) -> list[dict]:
    from .report import STRATEGY_ORDER

    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    budgets = list(dict.fromkeys(r["budget"] for r in runs))
    rows = []
    for b in budgets:
        for strat in sorted({r["strategy"] for r in runs if r["budget"] == b}, key=lambda s: (rank.get(s, 99), s)):
            rs = [r for r in runs if r["budget"] == b and r["strategy"] == strat]
            att = [attacker_stats(r.get("rounds", [])) for r in rs]
            rows.append({"budget": _budget_name(b), "strategy": strat, "seeds": [r["seed"] for r in rs],
                         "accuracy": _ms([r["summary"].get("mean_accuracy") for r in rs]),
                         "trigger_drop": _ms([r["summary"].get("trigger_drop") for r in rs]),
                         "recall": _ms([a["recall"] for a in att]), "precision": _ms([a["precision"] for a in att]),
                         "attacker_norm": _ms([a["norm"] for a in att]), "attacker_scale": _ms([a["scale"] for a in att]),
                         "attacker_md_est": _ms([a["md_est"] for a in att])})
    return rows


def adaptive_markdown(doc: dict) -> str:
    def f(pair, digits=2):
        m, s = pair
        if m is None:
            return "–"
        return f"{m:.{digits}f} ± {s:.{digits}f}" if len(doc["seeds"]) > 1 else f"{m:.{digits}f}"

    lines = [f"# The DGC-aware attacker (`fl-mdisc adaptive`, preset {doc['preset']}, {doc['rounds']} rounds, "
             f"seeds {doc['seeds']})", "",
             "Budget: the attacker keeps its own estimate of DGC's statistic (on its own clean images, with theta_hist "
             "and the protocol) at most budget x the threshold it estimates by running DGC's calibration rule on its "
             "own images; `unaware` = the plain lambda-update. Accuracy = mean test accuracy over the evaluations; "
             "DGC recall/precision = DGC's flags on the poisoning rounds (the trigger round, never held back and "
             "flagged in every DGC cell, excluded); attacker norm / scale = what it sent (mean over the poisoning "
             "rounds).", "",
             "| budget | strategy | accuracy | trigger drop | DGC recall | DGC precision | attacker norm | attacker scale |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['budget']} | {label(r['strategy'])} | {f(r['accuracy'])} | {f(r['trigger_drop'])} | "
                     f"{f(r['recall'], 3)} | {f(r['precision'], 3)} | {f(r['attacker_norm'], 3)} | "
                     f"{f(r['attacker_scale'], 3)} |")
    lines += ["", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


def plot_adaptive(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = list(dict.fromkeys(r["budget"] for r in doc["rows"]))
    x = np.arange(len(budgets))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for strat in dict.fromkeys(r["strategy"] for r in doc["rows"]):
        ys = [next((r["accuracy"] for r in doc["rows"] if r["budget"] == b and r["strategy"] == strat), (None, None))
              for b in budgets]
        a1.errorbar(x, [np.nan if m is None else m for m, _ in ys], yerr=[0 if s is None else s for _, s in ys],
                    marker="o", capsize=3, label=label(strat))
    a1.set_xticks(x)
    a1.set_xticklabels(budgets)
    a1.set_xlabel("attacker's budget (x its honest level; unaware = plain lambda-update)")
    a1.set_ylabel("mean test accuracy (%)")
    a1.set_title("Damage per budget")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    name = next((r["strategy"] for r in doc["rows"] if r["strategy"].startswith("dgc")), "dgc")
    dgc = [next((r for r in doc["rows"] if r["budget"] == b and r["strategy"] == name), None) for b in budgets]
    a2.plot(x, [np.nan if r is None or r["recall"][0] is None else r["recall"][0] for r in dgc], "o-",
            label=f"{label(name)} recall")
    st = [next((r for r in doc["rows"] if r["budget"] == b and r["strategy"] == "st"), None) for b in budgets]
    a2.plot(x, [np.nan if r is None or r["attacker_scale"][0] is None else r["attacker_scale"][0] for r in st], "s--",
            label="attacker scale (under ST)")
    a2.set_xticks(x)
    a2.set_xticklabels(budgets)
    a2.set_ylim(-0.05, 1.05)
    a2.set_xlabel("attacker's budget")
    a2.set_title("Detection and what the attacker keeps")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    save_figure(fig, path, f"DGC-aware attacker (preset {doc['preset']}, seeds {doc['seeds']})")


def adaptive(overrides: list[str], quiet: bool = True) -> dict:
    from fl_mdisc.config import compose
    from .tables import _get, load_run, pop_list, run_cells

    command = command_line("adaptive", overrides)
    seeds, overrides = pop_list(overrides, "seeds", [0])
    strategies, overrides = pop_list(overrides, "strategies", ["st", "gc", "dgc", "multikrum"])
    raw, overrides = pop_list(overrides, "budgets", ["unaware", "2", "1", "0.5"])
    budgets = []
    for b in raw:
        if b in ("unaware", "null", "none"):
            budgets.append(None)
            continue
        try:
            budgets.append(float(b))
        except ValueError:
            raise ConfigError(f"budgets must be numbers > 0 or 'unaware', got {b!r}") from None
        if budgets[-1] <= 0:
            raise ConfigError(f"budgets must be > 0 (or 'unaware'), got {b}")
    rest = [o for o in overrides if not o.startswith("out_dir=")]
    base = compose(rest)
    if base.protocol != "federated":
        raise ConfigError("fl-mdisc adaptive runs the federated protocol; drop protocol=harness")
    if _get(rest, "num_rounds") is None:
        g = base.tables.get("grid")
        rest.append(f"num_rounds={int(g.rounds) if g is not None else 50}")
    R = int(_get(rest, "num_rounds"))
    out = Path(_get(overrides, "out_dir") or f"outputs/adaptive-{base.preset_name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for seed in seeds:
        for b in budgets:
            for strat in strategies:
                name = f"adaptive-{_budget_name(b)}-{strat}-s{seed}"
                cells.append({"name": name, "budget": b, "strategy": strat, "seed": int(seed), "scenario": "poisoned",
                              "out_dir": str(out / "cells" / name),
                              "overrides": rest + [f"strategy={strat}", "attack=adaptive_update",
                                                   f"attack.md_budget={'null' if b is None else b}", f"seed={seed}"]})
    for c in cells:
        compose(c["overrides"])
    run_cells(cells, quiet)
    runs = [load_run(c) | {"budget": c["budget"]} for c in cells]
    doc = {"preset": str(base.preset_name), "rounds": R, "seeds": [int(s) for s in seeds],
           "budgets": [_budget_name(b) for b in budgets], "strategies": strategies, "rows": adaptive_rows(runs),
           "command": command}
    (out / "adaptive.json").write_text(json.dumps(doc, indent=1))
    (out / "adaptive.md").write_text(adaptive_markdown(doc))
    with open(out / "adaptive.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        cols = ["accuracy", "trigger_drop", "recall", "precision", "attacker_norm", "attacker_scale", "attacker_md_est"]
        w.writerow(["budget", "strategy", "seeds"] + [f"{c}{s}" for c in cols for s in ("", "_std")])
        for r in doc["rows"]:
            w.writerow([r["budget"], r["strategy"], " ".join(map(str, r["seeds"]))] + [v for c in cols for v in r[c]])
    plot_adaptive(doc, out / "adaptive.png")
    print((out / "adaptive.md").read_text())
    print(f"fl-mdisc: adaptive written to {out}")
    return doc
