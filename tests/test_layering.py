"""The layering a reader sees in the folder names: core (fl_mdisc) <- clients, core <- strategies, app on top; and
no import circle between modules (lazy imports inside functions included)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fl_mdisc", "clients", "strategies", "app")


def _imports(path: Path, package: str) -> set[str]:
    """Modules of this repo imported anywhere in ``path`` (as ``package.module``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the package
                base = package if not node.module else f"{package}.{node.module}"
                names = [base] + [f"{package}.{a.name}" for a in node.names] if not node.module else [base]
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] in PACKAGES and len(parts) >= 2 and (REPO / parts[0] / f"{parts[1]}.py").is_file():
                out.add(".".join(parts[:2]))
            elif parts[0] in PACKAGES:
                out.add(parts[0])
    return out


def _graph() -> dict[str, set[str]]:
    return {f"{pkg}.{p.stem}": _imports(p, pkg) - {f"{pkg}.{p.stem}"}
            for pkg in PACKAGES for p in sorted((REPO / pkg).glob("*.py")) if p.stem != "__init__"}


def test_each_layer_imports_only_the_layers_below():
    allowed = {"fl_mdisc": {"fl_mdisc"}, "clients": {"fl_mdisc", "clients"}, "strategies": {"fl_mdisc", "strategies"},
               "app": set(PACKAGES)}
    bad = [(m, d) for m, deps in _graph().items() for d in deps if d.split(".")[0] not in allowed[m.split(".")[0]]]
    assert bad == []


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
