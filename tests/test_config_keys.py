"""One source of defaults: every config key the code reads exists in conf/, and the code never falls back to a
default of its own for a config key (the YAML is the only place a default lives)."""

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CODE = [p for d in ("fl_mdisc", "strategies", "clients", "app") for p in sorted((ROOT / d).glob("*.py"))]
GROUPS = ("dataset", "model", "strategy", "attack", "defense")
METHODS = {"get", "items", "keys", "values", "pop", "name"}  # attribute names that end a key path


def _paths(node, prefix=""):
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "defaults":
                continue
            p = f"{prefix}{k}"
            out.add(p)
            out |= _paths(v, p + ".")
    return out


def yaml_paths() -> set[str]:
    """Every key path of conf/: config.yaml and the presets at the top level, each group option under its group."""
    conf = ROOT / "conf"
    paths = _paths(yaml.safe_load((conf / "config.yaml").read_text()))
    for p in (conf / "preset").glob("*.yaml"):
        paths |= _paths(yaml.safe_load(p.read_text()) or {})
    for g in GROUPS:
        paths.add(g)
        for p in (conf / g).glob("*.yaml"):
            paths |= _paths(yaml.safe_load(p.read_text()) or {}, g + ".")
    return paths


def _chain(node) -> list[str] | None:
    """``cfg.a.b`` -> ["a", "b"] for chains rooted at the name ``cfg``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == "cfg":
        return parts[::-1]
    return None


def code_reads():
    """(path, file:line, fallback) of every config read: ``cfg.a.b``, ``cfg.a.get("b"[, fallback])``."""
    reads = []
    for f in CODE:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            where = f"{f.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                base = _chain(node.func.value)
                if base is not None:
                    fallback = node.args[1] if len(node.args) > 1 else None
                    reads.append((".".join(base + [node.args[0].value]), where, fallback))
            elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
                parts = _chain(node)
                if parts:
                    while parts and parts[-1] in METHODS - {"name"}:
                        parts = parts[:-1]
                    if parts:
                        reads.append((".".join(parts), where, None))
    return reads


def test_every_key_the_code_reads_exists_in_conf():
    known = yaml_paths()
    missing = sorted({f"{p} ({w})" for p, w, _ in code_reads() if p not in known})
    assert not missing, "config keys read by the code but absent from conf/: " + ", ".join(missing)


# attack=none carves the attackers' batches of the pool protocol at the sizes the attack configs give them, so
# that the clean run's partitions equal the poisoned run's (fl_mdisc/experiment.py); checked below
SIZED_BY_THE_ATTACK_CONFIGS = {"attack.val_size", "attack.trigger_size"}


def test_no_code_side_default_for_a_config_key():
    fallbacks = sorted(f"{p} ({w})" for p, w, fb in code_reads() if p not in SIZED_BY_THE_ATTACK_CONFIGS
                       and fb is not None and not (isinstance(fb, ast.Constant) and fb.value is None))
    assert not fallbacks, "the YAML holds the defaults; these reads fall back to their own: " + ", ".join(fallbacks)


def test_the_clean_run_carves_what_the_attacks_carve():
    from fl_mdisc.experiment import ATTACKER_TRIGGER_SIZE, ATTACKER_VAL_SIZE

    for name in ("lambda_update", "adaptive_update", "accumulative"):
        a = yaml.safe_load((ROOT / "conf" / "attack" / f"{name}.yaml").read_text())
        assert (a.get("val_size"), a.get("trigger_size")) == (ATTACKER_VAL_SIZE, ATTACKER_TRIGGER_SIZE), name


def test_the_scan_sees_reads():  # the scan itself: a read of an unknown key and a fallback are found
    tree = ast.parse("cfg.fed.bogus_key\ncfg.strategy.get('kappa', 3.5)\n")
    chains = [".".join(_chain(n)) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _chain(n)]
    assert "fed.bogus_key" in chains and "fed.bogus_key" not in yaml_paths() and "strategy.kappa" in yaml_paths()
