"""The README's reference table: several ``fl-mdisc grid`` outputs (strategies x attacks x seeds) merged into one
table and one figure, without running a cell.

    .venv/bin/python benchmarks/reference_table.py OUT_DIR GRID_DIR[:SUFFIX] [GRID_DIR[:SUFFIX] ...]

Each GRID_DIR holds a ``grid.json`` written by ``fl-mdisc grid``. A SUFFIX renames that grid's attack scenarios
(``alie`` -> ``alie-opt``), so a grid run with ``attack.optimal=true`` sits beside the plain one. Writes
OUT_DIR/reference.{md,png}: per setting, one row per strategy, mean ± std over the seeds of the mean test accuracy
over the evaluations (%), and DGC's recall per attack (share of the attackers' updates it flagged). A cell missing
from every grid is shown as "–"; the seeds behind each number are listed when they differ from the grid's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.report import label  # noqa: E402

NAMES = {"clean": "clean", "poisoned": "λ-update (accumulative)", "alie": "ALIE", "ipm": "IPM",
         "signflip": "sign flip", "gaussian": "Gaussian", "inf": "inf", "mimic": "mimic",
         "alie-opt": "ALIE (optimal)", "ipm-opt": "IPM (optimal)"}


def merge(grids: list[tuple[Path, str]]) -> tuple[dict, list[str], list[str], list[str]]:
    """{(setting, strategy): {scenario: (mean, std, seeds, recall)}}, settings, strategies, scenarios in order."""
    cells: dict = {}
    settings: list[str] = []
    strategies: list[str] = []
    scenarios: list[str] = []
    for d, suffix in grids:
        doc = json.loads((d / "grid.json").read_text())
        for r in doc["rows"]:
            for sc in doc["scenarios"]:
                if r.get(f"{sc}_mean") is None:
                    continue
                name = f"{sc}-{suffix}" if suffix else sc
                rec = r.get("recall") if sc == "poisoned" else r.get(f"{sc}_recall")
                cells.setdefault((r["setting"], r["strategy"]), {})[name] = (
                    r[f"{sc}_mean"], r.get(f"{sc}_std"), r.get(f"{sc}_seeds"), rec)
                for lst, v in ((settings, r["setting"]), (strategies, r["strategy"]), (scenarios, name)):
                    if v not in lst:
                        lst.append(v)
    return cells, settings, strategies, scenarios


def markdown(cells, settings, strategies, scenarios) -> str:
    out = []
    for s in settings:
        seeds = sorted({x for (st, _), v in cells.items() if st == s for c in v.values() for x in (c[2] or [])})
        out += [f"**{s}** (seeds {seeds}; mean test accuracy over the evaluations, %, mean ± std over seeds)", "",
                "| strategy | " + " | ".join(NAMES.get(c, c) for c in scenarios) + " | DGC recall: "
                + " / ".join(NAMES.get(c, c) for c in scenarios if c != "clean") + " |",
                "|---|" + "---|" * (len(scenarios) + 1)]
        for st in strategies:
            v = cells.get((s, st))
            if not v:
                continue
            row = []
            for c in scenarios:
                if c not in v:
                    row.append("–")
                    continue
                m, sd, sds, _ = v[c]
                note = f" (seeds {sds})" if sds and sorted(sds) != seeds else ""
                row.append(f"{m:.2f} ± {sd:.2f}{note}" if sd is not None else f"{m:.2f}{note}")
            recall = " / ".join("–" if c not in v or v[c][3] is None else f"{v[c][3]:.2f}"
                                for c in scenarios if c != "clean") if st.startswith("dgc") else ""
            out.append(f"| {label(st)} | " + " | ".join(row) + f" | {recall} |")
        out.append("")
    return "\n".join(out)


def figure(cells, settings, strategies, scenarios, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.2), squeeze=False)
    width = 0.8 / max(1, len(strategies))
    for ax, s in zip(axes[0], settings):
        x = np.arange(len(scenarios))
        for i, st in enumerate(strategies):
            v = cells.get((s, st), {})
            m = [v[c][0] if c in v else np.nan for c in scenarios]
            e = [(v[c][1] or 0) if c in v else 0 for c in scenarios]
            ax.bar(x + (i - (len(strategies) - 1) / 2) * width, m, width, yerr=e, capsize=2, label=label(st))
        ax.set_xticks(x)
        ax.set_xticklabels([NAMES.get(c, c).replace(" (accumulative)", "") for c in scenarios], rotation=20)
        ax.set_ylim(0, 80)
        ax.set_ylabel("mean test accuracy (%)")
        ax.set_title(s)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("ByzFL reference attacks and aggregators beside GC and DGC (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out = Path(argv[0])
    grids = []
    for a in argv[1:]:
        d, _, suffix = a.partition(":")
        if not (Path(d) / "grid.json").exists():
            raise SystemExit(f"{d}/grid.json not found: run its `fl-mdisc grid` first (the command is in the README)")
        grids.append((Path(d), suffix))
    cells, settings, strategies, scenarios = merge(grids)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "benchmarks/reference_table.py " + " ".join(argv)
    (out / "reference.md").write_text(markdown(cells, settings, strategies, scenarios) + f"\nCommand: `{cmd}`\n")
    figure(cells, settings, strategies, scenarios, out / "reference.png")
    print((out / "reference.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
