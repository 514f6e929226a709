"""``fl-mdisc docs``: regenerate every generated block and figure of README.md and docs/ from the committed result
files.

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``; :data:`BLOCKS` maps NAME
to a function of the repository root that returns its Markdown, read from files under ``docs/results/`` (no cell is
run), and ``table:<path>:<n>`` is the n-th table of a result page that a sweep command wrote. :data:`FIGURES` maps
every committed figure to the function that redraws it from the report file beside it. ``fl-mdisc docs`` rewrites
blocks and figures in place; ``fl-mdisc docs --check`` changes nothing and exits 1 when a committed page or figure
differs from what the files give (tests/test_docs.py runs it), so a number in a page is always the number in its
result folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

PAGES = ("README.md", "docs/*.md", "docs/experiments/*.md")
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w./:-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def _json(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text())


def _cell(doc: dict, scenario: str, strategy: str) -> dict | None:
    return next((c for c in doc["cells"] if c["scenario"] == scenario and c["strategy"] == strategy), None)


def _fmt(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


TABLE13 = (("federated (ours: 4 honest streaming clients + 1 λ-update attacker)", "table13-federated", "gc", "dgc_paper"),
           ("harness at the paper's server lr 0.1, the seed paper's L∞ GC", "table13-harness-linf", "gc_linf",
            "dgc_linf"))


def summary_table(root: Path) -> str:
    """README's headline: per protocol, poisoned and clean accuracy of ST / GC / DGC (mean over the evaluations and
    seeds, DGC with the paper rule as in Table 13) beside the paper's final Table 13 values, and whether the paper's
    ordering (poisoned ST < GC < DGC, clean DGC within 0.5 of GC) holds."""
    lines = ["| protocol | seeds | poisoned ST / GC / DGC | clean GC / DGC | paper's ordering holds |",
             "|---|---|---|---|---|"]
    paper = None
    for label, folder, gc, dgc in TABLE13:
        doc = _json(root, f"docs/results/{folder}/table13.json")
        paper = doc["paper"]
        m = {(s, k): (_cell(doc, s, k) or {}).get("mean_over_evals") for s in ("clean", "poisoned")
             for k in ("st", gc, dgc)}
        holds = None not in m.values() and m["poisoned", "st"] < m["poisoned", gc] < m["poisoned", dgc] \
            and abs(m["clean", dgc] - m["clean", gc]) <= 0.5
        lines.append(f"| {label} ([{folder}](docs/results/{folder}/table13.md)) | {len(doc['seeds'])} | "
                     f"{_fmt(m['poisoned', 'st'])} / {_fmt(m['poisoned', gc])} / {_fmt(m['poisoned', dgc])} | "
                     f"{_fmt(m['clean', gc])} / {_fmt(m['clean', dgc])} | {'yes' if holds else 'no'} |")
    p = {(c["scenario"], c["strategy"]): c["accuracy_mean"][-1] for c in paper["cells"]}
    lines.append(f"| paper, Table 13 (ResNet-18, GPU, step {paper['steps'][-1]}) | – | {_fmt(p['poisoned', 'st'])} / "
                 f"{_fmt(p['poisoned', 'gc'])} / {_fmt(p['poisoned', 'dgc'])} | {_fmt(p['clean', 'gc'])} / "
                 f"{_fmt(p['clean', 'dgc'])} | – |")
    return "\n".join(lines) + "\n"


def md_tables(path: Path) -> list[str]:
    """The Markdown tables of a file, in order."""
    md = path.read_text()
    blocks, cur = [], []
    for line in md.split("\n"):
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append("\n".join(cur) + "\n")
            cur = []
    if cur:
        blocks.append("\n".join(cur) + "\n")
    return blocks


GRID_TABLES = {"accuracy": "| setting | strategy | server told |", "other-attacks": "| setting | strategy | attack |",
               "targets": "| setting | seed | clean FPR |", "gaps": "| setting | closest other row"}


def _grid_table(root: Path, which: str) -> str:
    """The table of the grid-history report whose header starts as ``GRID_TABLES[which]``."""
    found = [t for t in md_tables(root / "docs/results/grid-history/grid.md") if t.startswith(GRID_TABLES[which])]
    if len(found) != 1:
        raise ValueError(f"docs/results/grid-history/grid.md has {len(found)} {which} tables, expected one")
    return found[0]


def grid_not_run(root: Path) -> str:
    doc = _json(root, "docs/results/grid-history/grid.json")
    seeds = sorted({r["seed"] for r in doc["per_seed"]})
    head = f"Complete cells: {sum(1 for _ in (root / 'docs/results/grid-history/cells').iterdir())}; burn-in seeds "
    not_run = doc.get("not_run") or []
    if not not_run:
        return head + f"{seeds}, every cell of the report's command complete.\n"
    return (head + f"with at least one cell: {seeds}; not run yet: {len(not_run)} cells (listed in "
            "[grid.md](../results/grid-history/grid.md)).\n")


def _table_of(root: Path, rel: str) -> str:
    lines = [line for line in (root / rel).read_text().split("\n") if line.startswith("|")]
    return "\n".join(lines) + "\n"


def grid_misses(root: Path) -> str:
    return _table_of(root, "docs/results/grid-history/misses.md")


def datasets_table(root: Path) -> str:
    """The datasets as ``conf/dataset/*.yaml`` describes them, with where torchvision's files go."""
    import yaml

    from fl_mdisc.data import TORCHVISION, burnin_size

    lines = ["| `dataset=` | classes | training images | burn-in / clients' pool (default share) | crop+flip | "
             "torchvision's files under the data root |", "|---|---|---|---|---|---|"]
    for name in ("cifar10", "svhn", "cifar100", "mnist"):
        d = yaml.safe_load((root / "conf" / "dataset" / f"{name}.yaml").read_text())
        n, b = int(d["train_size"]), burnin_size(d["burnin_share"], int(d["train_size"]))
        files = TORCHVISION[name][1] + (" (`extra_32x32.mat` with `dataset.extra=true`)" if "extra" in d else "")
        lines.append(f"| `{name}` | {d['num_classes']} | {n:,} | {b:,} / {n - b:,} ({d['burnin_share']}) | "
                     f"{'yes' if d['augment'] else 'no'} | {files} |")
    return "\n".join(lines) + "\n"


BENCH = "docs/results/bench/bench.md"


def bench_head(root: Path) -> str:
    """The machine and config line of the committed ``fl-mdisc bench`` page."""
    return (root / BENCH).read_text().split("\n\n")[0] + "\n"


def bench_deployment(root: Path) -> str:
    """The bench page's machine line and its Deployment Engine rows (beside the simulation's steady round)."""
    rows = [line for line in md_tables(root / BENCH)[0].splitlines()
            if line.startswith(("| measure", "|---")) or "Deployment Engine" in line]
    return bench_head(root) + "\n" + "\n".join(rows) + "\n"


MD_AWARE = (("small CNN", "docs/results/table3/md_aware_poison_seeds012.txt"),
            ("ResNet-18", "docs/results/table3/md_aware_poison_resnet18_h200.txt"))


def md_aware_runs(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``benchmarks/md_aware_poison.py``'s output: per (form, burn-in seed), β -> the poisoned batch's MD at arrival."""
    runs: dict[tuple[str, int], dict[str, float]] = {}
    seed = None
    for line in path.read_text().splitlines():
        m = re.match(r"preset \S+, model \S+, seed (\d+),", line)
        if m:
            seed = int(m.group(1))
            continue
        cols = line.split()
        if seed is not None and len(cols) == 5 and cols[0] in ("paper", "input"):
            runs.setdefault((cols[0], seed), {})[cols[1]] = float(cols[2])
    return runs


def md_aware_table(root: Path) -> str:
    """The adaptive page's Eq. 21 table: the poisoned batch's MD at arrival per β, model, burn-in seed and form."""
    data = [(model, md_aware_runs(root / rel)) for model, rel in MD_AWARE]
    betas = list(next(iter(data[0][1].values())))
    lines = ["| model, burn-in seed | form | " + " | ".join(f"β = {b}" for b in betas) + " |",
             "|---|---|" + "---|" * len(betas)]
    for form, label in (("paper", "paper (Eq. 21)"), ("input", "input (direct)")):
        for model, runs in data:
            for (f, seed), row in sorted(runs.items()):
                if f == form:
                    lines.append(f"| {model}, {seed} | {label} | " + " | ".join(f"{row[b]:.2f}" for b in betas) + " |")
    return "\n".join(lines) + "\n"


PIPE = "\\|"
KEY_LINE = re.compile(r"^(?P<ind> *)(?P<key>[\w.@-]+):(?: +(?P<val>[^#]*?))?(?: +# ?(?P<doc>.*))? *$")


def yaml_keys(text: str) -> list[tuple[str, str, str]]:
    """(dotted key, default as written, its inline comment) for every key of a YAML file, in file order; a flow list
    continued on the next lines is joined; ``defaults`` (Hydra's list) and comment-only lines are skipped."""
    rows: list[list[str]] = []
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if rows and rows[-1][1].count("[") > rows[-1][1].count("]"):  # inside a flow list
            part, _, doc = line.partition(" #")
            rows[-1][1] += " " + part.strip()
            rows[-1][2] = rows[-1][2] or doc.strip()
            continue
        m = KEY_LINE.match(line)
        if not m or line.lstrip().startswith("#") or line.lstrip().startswith("- "):
            continue
        ind = len(m["ind"])
        while stack and stack[-1][0] >= ind:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m["key"]])
        stack.append((ind, m["key"]))
        if key.split(".")[0] != "defaults":
            rows.append([key, (m["val"] or "").strip(), (m["doc"] or "").strip()])
    return [(k, v, d) for k, v, d in rows]


def config_table(root: Path, rel: str) -> str:
    """One config file's keys as a Markdown table (a key holding others shows no default)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, val, doc in yaml_keys((root / rel).read_text()):
        cell, doc = (f"`{val}`" if val else "").replace("|", PIPE), doc.replace("|", PIPE)
        lines.append(f"| `{key}` | {cell} | {doc} |")
    return "\n".join(lines) + "\n"


def config_count(root: Path) -> str:
    """How many keys the files under ``conf/`` hold (a preset's or option's key counted once per name)."""
    files = sorted((root / "conf").rglob("*.yaml"))
    keys = set()
    for f in files:
        group = f.parent.relative_to(root / "conf").as_posix()
        prefix = "" if group in (".", "preset") else group + "."
        keys |= {prefix + k for k, val, _ in yaml_keys(f.read_text()) if val}
    return f"`conf/` holds {len(keys)} settable keys (dotted names with a value) in {len(files)} files.\n"


REPRODUCE = (  # paper artefact, command (as its result folder's README gives it), result folder, page
    ("Zhu et al., Table 13 (GC vs DGC), federated protocol",
     "fl-mdisc table13 preset=cpu protocol=federated 'seeds=[0,1,2]' sweep.parallel=2", "table13-federated",
     "docs/experiments/table13.md"),
    ("Zhu et al., Table 13, Pang's harness at the paper's server lr",
     "fl-mdisc table13 preset=cpu protocol=harness harness.server_lr=0.1 'seeds=[0,1]' "
     "'strategies=[st,gc,gc_linf,dgc_linf]' num_rounds=100 sweep.parallel=2", "table13-harness-linf", "docs/experiments/table13.md"),
    ("Zhu et al., Table 13 at paper scale (ResNet-18, GPU)",
     "fl-mdisc table13 preset=paper protocol=harness 'seeds=[0]' 'strategies=[st,gc]' 'scenarios=[poisoned]'",
     "paper-gpu", "docs/experiments/table13.md"),
    ("Zhu et al., Table 1 (online stream: ST, GC, AT, DSC)",
     "fl-mdisc table1 preset=cpu 'seeds=[0,1,2]' num_rounds=30 sweep.parallel=2", "table1",
     "docs/experiments/table1.md"),
    ("Zhu et al., Table 1 on SVHN and CIFAR-100 (not run here: no copy of the data)",
     "fl-mdisc table1 preset=cpu 'datasets=[svhn,cifar100]' 'seeds=[0,1,2]' num_rounds=30", None,
     "docs/usage.md#datasets"),
    ("Zhu et al., Table 3 (MD-aware attacker vs DSC)", "fl-mdisc table3 preset=cpu 'seeds=[0,1,2]'", "table3-m2",
     "docs/experiments/table3.md"),
    ("DGC across federations (our question)", "fl-mdisc grid preset=cpu 'seeds=[0,1,2]' sweep.parallel=2",
     "grid-history", "docs/experiments/grid.md"),
    ("The DGC-aware attacker (our question)", "fl-mdisc adaptive preset=cpu 'seeds=[0,1,2]' sweep.parallel=2",
     "adaptive-m2", "docs/experiments/adaptive.md"),
)


def cells_time(root: Path, folder: str | None, lanes: int) -> str:
    """The run time of a result folder's committed cells: their ``wall_s`` summed, over the sweep's lanes."""
    cells = sorted((root / "docs/results" / folder / "cells").glob("*/summary.json")) if folder else []
    walls = [json.loads(c.read_text()).get("wall_s") for c in cells]
    walls = [w for w in walls if w]
    if not walls:
        return "not recorded (no cells kept)" if folder else "–"
    return f"{sum(walls) / lanes / 60:.0f} min ({len(walls)} cells)"


def reproduce_table(root: Path) -> str:
    """README's "Reproduce the papers" table; the time is what the committed cells took on this 2-core machine."""
    lines = ["| paper artefact | command | time here | page |", "|---|---|---|---|"]
    for what, cmd, folder, page in REPRODUCE:
        lanes = int(re.search(r"sweep\.parallel=(\d+)", cmd).group(1)) if "sweep.parallel=" in cmd else 1
        name = page.split("/")[-1].split("#")[0] if "#" not in page else "datasets"
        time_ = cells_time(root, folder, lanes)
        if folder == "grid-history":  # its committed cells, not the command's; a few sweeps ran in one lane
            time_ += ", the committed cells: no ST row, GC under ALIE added (most ran 2 lanes)"
        lines.append(f"| {what} | `{cmd}` | {time_} | [{name}]({page}) |")
    return "\n".join(lines) + "\n"


QUICKSTART = "docs/results/quickstart"


def elapsed_minutes(path: Path) -> float:
    """The wall time that GNU time's ``-v`` report in ``path`` gives ("Elapsed (wall clock) time"), in minutes."""
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", path.read_text())
    parts = [float(x) for x in m.group(1).split(":")]
    return sum(v * 60 ** i for i, v in enumerate(reversed(parts))) / 60


def quickstart_times(root: Path) -> str:
    """How long ``make run`` (cold: empty cache; warm: its second run) and ``make test`` took here."""
    d = root / QUICKSTART
    cold, warm, test = (elapsed_minutes(d / f) for f in ("run-cold.txt", "run-warm.txt", "test.txt"))
    return (f"On this 2-core machine `make run` took {cold:.1f} min cold (empty cache: the burn-in and the "
            f"calibrations first) and {warm:.1f} min warm, and `make test` {test:.1f} min "
            f"([{QUICKSTART}]({QUICKSTART}/README.md)).\n")


BLOCKS: dict[str, Callable[[Path], str]] = {
    "quickstart-times": quickstart_times,
    "reproduce": reproduce_table,
    "config-count": config_count,
    "md-aware-poison": md_aware_table,
    "bench-head": bench_head,
    "bench-deployment": bench_deployment,
    "summary": summary_table,
    "datasets": datasets_table,
    "grid-history-accuracy": lambda root: _grid_table(root, "accuracy"),
    "grid-history-targets": lambda root: _grid_table(root, "targets"),
    "grid-history-other-attacks": lambda root: _grid_table(root, "other-attacks"),
    "grid-history-gaps": lambda root: _grid_table(root, "gaps"),
    "grid-history-status": grid_not_run,
    "grid-history-misses": grid_misses,
    "grid-history-separability": lambda root: _table_of(root, "docs/results/grid-history/separability.md"),
}


def _load_benchmark(root: Path, name: str):
    """A module of ``benchmarks/`` (not a package) by file path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", root / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _renamed(obj, rename: dict[str, str]):
    """A report with its strategy names (``strategy`` values, ``strategies`` lists) renamed: for results recorded
    before a rename (their READMEs say which)."""
    if isinstance(obj, list):
        return [_renamed(x, rename) for x in obj]
    if not isinstance(obj, dict):
        return obj
    return {k: rename.get(v, v) if k == "strategy" and isinstance(v, str)
            else [rename.get(x, x) for x in v] if k == "strategies" and isinstance(v, list)
            else _renamed(v, rename) for k, v in obj.items()}


# Results recorded before issue 26: `dgc` was the paper rule and Multi-Krum was told the true f.
BEFORE_26 = {"dgc": "dgc_paper", "multikrum": "multikrum@f"}


def _from_json(src: str, plot: str, rename: dict[str, str] | None = None) -> Callable[[Path, Path], None]:
    """A figure drawn by ``app.<module>.<function>(doc, path)`` from a committed report file."""
    def draw(root: Path, path: Path) -> None:
        import importlib

        module, fn = plot.rsplit(".", 1)
        getattr(importlib.import_module(module), fn)(_renamed(_json(root, src), rename or {}), path)
    return draw


def _md_stream(root: Path, path: Path) -> None:
    from .report import plot_md_stream, read_jsonl

    cells = sorted((root / "docs/results/table1/cells").glob("online-poisoned-st-s*"))
    plot_md_stream([{"rounds": read_jsonl(c / "rounds.jsonl")} for c in cells], path)


def _reference(folder: str, rename: dict[str, str]) -> Callable[[Path, Path], None]:
    """``benchmarks/reference_table.py``'s figure in ``folder``, from the grids its recorded command names, with the
    strategies renamed by ``rename`` (``BEFORE_26`` for grids written before issue 26)."""
    def draw(root: Path, path: Path) -> None:
        ref = _load_benchmark(root, "reference_table")
        page = (root / folder / "reference.md").read_text()
        cmd = re.search(r"Command: `benchmarks/reference_table.py (.*)`", page)
        grids = [(root / d, suffix) for d, _, suffix in (a.partition(":") for a in cmd.group(1).split()[1:])]
        cells, settings, strategies, scenarios = ref.merge(grids)
        cells = {(s, rename.get(st, st)): v for (s, st), v in cells.items()}
        ref.figure(cells, settings, [rename.get(st, st) for st in strategies], scenarios, path)
    return draw


# Every committed figure (README.md and docs/ show each), and how `fl-mdisc docs` redraws it from the committed
# report files beside it; the sweeps draw more figures, which are not committed.
FIGURES: dict[str, Callable[[Path, Path], None]] = {
    "docs/results/table13-federated/table13.png": _from_json("docs/results/table13-federated/table13.json",
                                                             "app.report.plot_table13"),
    "docs/results/table13-harness-linf/table13.png": _from_json("docs/results/table13-harness-linf/table13.json",
                                                                "app.report.plot_table13"),
    "docs/results/table1/md_stream.png": _md_stream,
    **{f"docs/results/{d}/table3.png": _from_json(f"docs/results/{d}/table3.json", "app.table3.plot_table3")
       for d in ("table3", "table3-m2")},  # table3: the history page
    "docs/results/table3-m2-input/table3.png": _from_json("docs/results/table3-m2-input/table3.json",
                                                          "app.table3.plot_table3"),
    "docs/results/adaptive-m2/adaptive.png": _from_json("docs/results/adaptive-m2/adaptive.json",
                                                        "app.adaptive_sweep.plot_adaptive", BEFORE_26),
    "docs/results/grid-history/grid.png": _from_json("docs/results/grid-history/grid.json", "app.grid.plot_grid"),
    "docs/results/reference-seeds012/reference.png": _reference("docs/results/reference-seeds012", BEFORE_26),
    "docs/results/reference-history/reference.png": _reference("docs/results/reference-history", {}),
    **{f"docs/results/calibration/seed{s}/calibration.png": _from_json(
        f"docs/results/calibration/seed{s}/calibration_fit.json", "app.report.plot_calibration") for s in (0, 1)},
    **{f"docs/results/{d}/grid.png": _from_json(f"docs/results/{d}/grid.json", "app.grid.plot_grid", BEFORE_26)
       for d in ("grid-seed0", "grid-seeds01", "grid-seeds012")},  # the history page
    "docs/results/adaptive/adaptive.png": _from_json("docs/results/adaptive/adaptive.json",
                                                     "app.adaptive_sweep.plot_adaptive", BEFORE_26),
}


def same_image(a: Path, b: Path) -> bool:
    """Same pixels; across matplotlib versions (the PNG's ``Software`` text) anti-aliasing may differ, so then a
    mean absolute difference under 0.5 % of the range is accepted."""
    import numpy as np
    from matplotlib.image import imread
    from PIL import Image

    x, y = imread(a), imread(b)
    if x.shape != y.shape:
        return False
    if np.array_equal(x, y):
        return True
    return Image.open(a).text.get("Software") != Image.open(b).text.get("Software") and float(np.abs(x - y).mean()) < 5e-3


def figures(root: Path, check: bool = False) -> list[str]:
    """Redraw (or, with ``check``, compare) every figure of :data:`FIGURES`; returns those that differed. A figure
    whose pixels are unchanged is not rewritten."""
    import tempfile

    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for rel, draw in FIGURES.items():
            new = Path(tmp) / rel.replace("/", "_")
            draw(root, new)
            path = root / rel
            if path.exists() and same_image(path, new):
                continue
            stale.append(rel)
            if not check:
                path.write_bytes(new.read_bytes())
    return stale


def pages(root: Path) -> list[Path]:
    return sorted({p for pattern in PAGES for p in root.glob(pattern)})


def block(name: str, root: Path) -> str:
    """A named block, or ``table:<path>:<n>``: the n-th table (from 0) of a committed result page."""
    if name.startswith("table:"):
        _, path, n = name.split(":")
        return md_tables(root / path)[int(n)]
    if name.startswith("config:"):
        return config_table(root, name.split(":", 1)[1])
    return BLOCKS[name](root)


def render(text: str, root: Path) -> str:
    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS and not name.startswith(("table:", "config:")):
            raise KeyError(f"unknown generated block {name!r}; known: {sorted(BLOCKS)}")
        return m.group(1) + block(name, root) + m.group(4)

    return BLOCK.sub(one, text)


def docs(root: Path, check: bool = False) -> list[str]:
    """Regenerate (or, with ``check``, compare) every page and figure; returns those that differed."""
    stale = figures(root, check)
    for page in pages(root):
        text = page.read_text()
        new = render(text, root)
        if new != text:
            stale.append(str(page.relative_to(root)))
            if not check:
                page.write_text(new)
    return stale
