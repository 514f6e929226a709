"""Compose (hydra), validate and serialise the run configuration.

conf/ is the single source of truth. Everything is validated here, before any data is loaded or any
model is trained, so that bad input gives one line naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

STRATEGIES = ("st", "gc", "dgc", "median", "trimmed_mean", "multikrum", "byzfl", "fldetector")
PARTITIONS = ("iid", "dirichlet", "pathological")
LAMBDA_ATTACKS = ("lambda_update", "adaptive_update")  # the lambda-update and its DGC-aware form
OMNISCIENT_ATTACKS = ("alie", "ipm", "signflip", "gaussian", "inf", "mimic")  # ByzFL's, fl_mdisc/byzfl_ref.py
ATTACKS = ("none", "accumulative", "stream_poison", "lambda_update", "adaptive_update", "nan", "shape", "scale", "spoof",
           "crash", "hang") + OMNISCIENT_ATTACKS
DEFENSES = ("none", "dsc", "at")
DATASETS = ("cifar10", "cifar100", "svhn", "mnist")
MODELS = ("small_cnn", "resnet18")
PROTOCOLS = ("federated", "harness")


def conf_dir() -> Path:
    """The conf/ folder: beside the packages in a checkout/FAB, or shipped inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    raise ConfigError(f"conf/config.yaml not found next to {here}; reinstall the project (make setup)")


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


# Keys retired by issue 27 (CHANGELOG.md): an override of one names what replaces it, before hydra's own error.
RETIRED_KEYS = {
    "fed.malicious_fraction": "set fed.num_malicious (the attackers' count) instead",
    "calib.clip_norm": "set strategy.clip_norm instead", "calib.mu": "set strategy.mu instead",
    "calib.tau": "set strategy.tau instead", "harness.mu": "set strategy.mu instead",
    "harness.tau": "set strategy.tau instead",
    "strategy.calib_population": "it is fixed (fl_mdisc/calib_sim.py SIMULATED_POPULATION)",
    "attack.norm_ref": "the attacker's reference norm is the one it measures at theta_start",
    "strategy.statistic": "DGC always judges the increase MD_k - MD(theta_t)",
    "strategy.hist": "theta_hist is the stored global historical model", "strategy.hist_lag": "see strategy.hist",
    "strategy.md_source": "the server measures MD on its own probe set",
}


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml with hydra overrides, then validate it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    fixed = []
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if key in RETIRED_KEYS:
            raise ConfigError(f"{key} is retired: {RETIRED_KEYS[key]} (CHANGELOG.md)")
        if key in ("strategy", "attack", "defense", "dataset", "model", "preset"):
            val = (ov.split("=", 1)[1] if "=" in ov else "").strip("'\"")
            opts = _group_options(key)
            if val not in opts:
                raise ConfigError(f"unknown {key} '{val}'; choose one of {opts}")
            ov = f"{ov.split('=', 1)[0]}='{val}'"  # quoted: hydra would read attack=nan as a float
        fixed.append(ov)
    overrides = fixed
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        msg = str(exc).strip().splitlines()[0]
        raise ConfigError(f"invalid override: {msg}") from None
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, False)
    resolve_defaults(cfg)
    validate(cfg)
    return cfg


def split_overrides(text: str) -> list[str]:
    """Split an `overrides` run-config string ("a=1 b='x y'") into hydra overrides."""
    return shlex.split(text or "")


def resolve_defaults(cfg: DictConfig) -> None:
    """Fill null values that default to the preset's calibrated values."""
    if cfg.protocol == "harness" and cfg.get("harness") is not None:
        cfg.fed.server_lr = cfg.harness.server_lr
        for k in ("lam", "trigger_scale", "norm_multiple", "stealth_drop"):
            if k in cfg.harness:
                cfg.calib[k] = cfg.harness[k]
    s = cfg.strategy
    if cfg.burnin.get("seed") is None and isinstance(cfg.get("seed"), int) and not isinstance(cfg.seed, bool):
        cfg.burnin.seed = int(cfg.seed)  # a table's seed redraws the burn-in unless burnin.seed is set
    # Still null after this: computed where the run happens (fl_mdisc/calibration.py), never a fitted constant.
    if cfg.protocol == "harness" and s.name in ("gc", "dgc") and s.get("clip_norm") is None:
        s.clip_norm = cfg.harness.get("clip_norm")
    if cfg.attack.name in LAMBDA_ATTACKS and cfg.attack.get("lam") is None:
        cfg.attack.lam = cfg.calib.lam
    if cfg.attack.name in LAMBDA_ATTACKS and cfg.attack.get("norm_multiple") is None:
        cfg.attack.norm_multiple = cfg.calib.get("norm_multiple")
    if cfg.attack.name in LAMBDA_ATTACKS and cfg.attack.get("stealth_drop") is None:
        cfg.attack.stealth_drop = cfg.calib.get("stealth_drop")
    if cfg.attack.name in LAMBDA_ATTACKS and cfg.attack.get("trigger_scale") is None:
        cfg.attack.trigger_scale = cfg.calib.trigger_scale
    if cfg.protocol == "harness":
        # Pang's harness: one participant per round supplies the whole aggregate.
        cfg.fed.num_clients = 1
        cfg.fed.num_malicious = 0 if cfg.attack.name == "none" else 1


def _num(cfg: DictConfig, path: str, lo: float | None = None, hi: float | None = None,
         integer: bool = False, lo_open: bool = False, allow_none: bool = False) -> None:
    val = OmegaConf.select(cfg, path)
    if val is None and allow_none:
        return
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise ConfigError(f"{path} must be a number, got {val!r}; set e.g. {path}=1")
    if integer and not float(val).is_integer():
        raise ConfigError(f"{path} must be an integer, got {val!r}")
    if not math.isfinite(float(val)):
        raise ConfigError(f"{path} must be finite, got {val!r}")
    if lo is not None and (val < lo or (lo_open and val == lo)):
        raise ConfigError(f"{path}={val} is out of range: it must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and val > hi:
        raise ConfigError(f"{path}={val} is out of range: it must be <= {hi}")


def ray_address(cfg) -> str:
    """``ray.address``: ``local`` (default), ``auto`` or ``host:port``; anything else is one clear error."""
    addr = str(OmegaConf.select(cfg, "ray.address", default="local"))
    if addr in ("local", "auto"):
        return addr
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"ray.address={addr!r}: use local (a private Ray instance), auto (Ray's own detection) or "
                          "host:port of a running Ray cluster's head (e.g. 10.0.0.5:6379)")
    return addr


ENGINES = ("simulation", "deployment")


def engine(cfg) -> str:
    """``engine``: ``simulation`` (Flower's Simulation Runtime on Ray, default) or ``deployment`` (a SuperLink and
    ``fed.num_clients`` SuperNodes as real processes on loopback); anything else is one clear error."""
    eng = str(OmegaConf.select(cfg, "engine", default="simulation"))
    if eng not in ENGINES:
        raise ConfigError(f"unknown engine {eng!r}; choose one of {list(ENGINES)}")
    return eng


def _when(group: str, *names: str):
    """A rule's condition: the chosen ``group`` option (strategy, attack, defense) is one of ``names``."""
    return lambda cfg: OmegaConf.select(cfg, f"{group}.name") in names


def _always(cfg) -> bool:
    return True


INT, OPEN, NONE = "int", "open", "none"

# (applies when, key, lo, hi, flags): hi may be a function of the config
RANGES = (
    (_always, "seed", 0, None, {INT}),
    (_always, "num_rounds", 1, None, {INT}),
    (_always, "sweep.parallel", 1, None, {INT}),
    (_always, "eval_every", 1, None, {INT}),
    (_always, "checkpoint_every", 1, None, {INT}),
    (_always, "server_threads", 1, None, {INT}),
    (_always, "client_threads", 1, None, {INT}),
    (_always, "attacker_threads", 1, None, {INT}),
    (_always, "fed.num_clients", 1, None, {INT}),
    (_always, "fed.num_malicious", 0, None, {INT}),
    (_always, "fed.batch_size", 1, None, {INT}),
    (_always, "fed.local_steps", 1, None, {INT}),
    (_always, "fed.client_lr", 0, None, {OPEN}),
    (_always, "fed.server_lr", 0, None, {OPEN}),
    (_always, "fed.server_momentum", 0, 0.999, set()),
    (_always, "fed.dirichlet_alpha", 0, None, {OPEN}),
    (_always, "fed.round_timeout", 1, None, set()),
    (_always, "fed.round_timeout_multiple", 1, None, {NONE}),
    (lambda c: c.fed.partition == "pathological", "fed.classes_per_client", 1, None, {INT}),
    (_always, "fed.min_partition_size", 1, None, {INT, NONE}),
    (_always, "assume.f", 0, lambda c: int(c.fed.num_clients), {INT, NONE}),
    (_always, "fed.clients_per_round", 1, lambda c: int(c.fed.num_clients), {INT, NONE}),
    (_when("strategy", "byzfl", "multikrum"), "strategy.f", 0, None, {INT, NONE}),
    (_when("attack", "stream_poison"), "attack.victims", 1, None, {INT}),
    (_when("attack", "accumulative", "stream_poison"), "attack.eps", 0, 1, {OPEN}),
    (_when("attack", "accumulative", "stream_poison"), "attack.step_size", 0, 1, {OPEN}),
    (_when("attack", "accumulative", "stream_poison"), "attack.steps", 1, None, {INT}),
    (_when("attack", "accumulative", "stream_poison"), "attack.gamma", 0, None, set()),
    (_when("attack", "accumulative", "stream_poison"), "attack.beta", 0, None, {NONE}),
    (_when("attack", "accumulative", "stream_poison", *LAMBDA_ATTACKS), "attack.val_size", 1, None, {INT}),
    (_when("attack", "accumulative", "stream_poison", *LAMBDA_ATTACKS), "attack.trigger_size", 1, None, {INT}),
    (_when("attack", "adaptive_update"), "attack.md_budget", 0, None, {OPEN, NONE}),
    (_when("attack", "adaptive_update"), "attack.probe_size", 1, None, {INT}),
    (_when("attack", "adaptive_update"), "attack.search_steps", 1, None, {INT}),
    (_when("attack", *LAMBDA_ATTACKS), "attack.lam", 0, None, {OPEN}),
    (_when("attack", *LAMBDA_ATTACKS), "attack.trigger_scale", 0, None, set()),
    (_when("attack", *LAMBDA_ATTACKS), "attack.norm_multiple", 0, None, {OPEN, NONE}),
    (_when("attack", *LAMBDA_ATTACKS), "attack.stealth_drop", 0, 100, {OPEN, NONE}),
    (_when("attack", "scale", "spoof"), "attack.factor", 0, None, set()),
    (_when("attack", "spoof"), "attack.claim", 0, lambda c: int(c.fed.num_clients) - 1, {INT}),
    (_when("defense", "dsc", "at"), "defense.eps", 0, 1, {OPEN}),
    (_when("defense", "dsc", "at"), "defense.step_size", 0, 1, {OPEN}),
    (_when("defense", "dsc", "at"), "defense.max_steps", 1, None, {INT}),
    (_when("defense", "dsc"), "defense.mu", 0, None, {NONE}),
    (_when("defense", "dsc"), "defense.tau", 0, None, {NONE}),
    (_when("strategy", "gc", "dgc"), "strategy.clip_norm", 0, None, {OPEN, NONE}),
    (_when("strategy", "gc", "dgc"), "strategy.calib_rounds", 10, None, {INT, NONE}),
    (_when("strategy", "gc", "dgc"), "strategy.calib_updates", 1, None, {INT, NONE}),
    (lambda c: c.strategy.name == "dgc" and c.strategy.gate == "history", "strategy.alpha", 0, 1, {OPEN}),
    (lambda c: c.strategy.name == "dgc" and c.strategy.gate == "history", "strategy.pool_rounds", 1, None, {INT}),
    (lambda c: c.strategy.name == "dgc" and c.strategy.gate == "history", "strategy.kappa", 0, None, {OPEN}),
    (_when("strategy", "dgc"), "strategy.mu", None, None, {NONE}),
    (_when("strategy", "dgc"), "strategy.tau", 0, None, {NONE}),
    (_when("strategy", "dgc"), "strategy.target_fpr", 0, 0.5, {OPEN, NONE}),
    (_when("strategy", "dgc"), "strategy.probe_size", 1, None, {INT}),
    (_when("strategy", "fldetector"), "strategy.window", 1, None, {INT}),
    (_when("strategy", "fldetector"), "strategy.memory", 1, None, {INT}),
    (_when("strategy", "fldetector"), "strategy.warmup", 0, None, {INT}),
    (_when("strategy", "trimmed_mean"), "strategy.beta", 0, 0.499, set()),
    (_when("strategy", "multikrum"), "strategy.num_to_select", 1, lambda c: int(c.fed.num_clients), {INT, NONE}),
    (_always, "burnin.seed", 0, None, {INT, NONE}),
    (_always, "burnin.epochs", 1, None, {INT}),
    (_always, "burnin.hist_epoch", 1, lambda c: c.burnin.epochs, {INT}),
    (_always, "burnin.lr", 0, None, {OPEN}),
    (_always, "burnin.batch_size", 1, None, {INT}),
    (_always, "burnin.calib_steps", 2, None, {INT}),
    (_always, "burnin.calib_quantile", 0, 1, set()),
    (_always, "dataset.num_classes", 2, None, {INT}),
    (_always, "dataset.burnin_share", 0, 0.99, {OPEN}),
    (_always, "dataset.train_size", 2, None, {INT}),
    (_always, "split.probe", 0, None, {INT}),
    (_always, "split.calib", 0, None, {INT, NONE}),
)

# (applies when, key, allowed values, what to suggest)
ENUMS = (
    (_always, "strategy.name", STRATEGIES, ""),
    (_always, "attack.name", ATTACKS, ""),
    (_always, "defense.name", DEFENSES, ""),
    (_always, "dataset.name", DATASETS, ""),
    (_always, "model.name", MODELS, ""),
    (_always, "protocol", PROTOCOLS, ""),
    (_always, "fed.partition", PARTITIONS, ""),
    (_always, "fed.attacker_data", ("partition", "pool"), ""),
    (_always, "device", ("auto", "cpu", "cuda"), ""),
    (_always, "deployment.clientapp", ("warm", "subprocess"), " (how a SuperNode starts its ClientApp processes)"),
    (_when("attack", "accumulative", "stream_poison"), "attack.md_form", ("paper", "input"), ""),
    (_when("defense", "dsc"), "defense.measure", ("kl", "js"), ""),
    (_when("strategy", "gc", "dgc"), "strategy.norm", ("l2", "linf"), ""),
    (_when("strategy", "dgc"), "strategy.gate", ("history", "paper"), " (paper: strategy=dgc_paper)"),
    (_when("strategy", "dgc"), "strategy.mode", ("clip", "scale"), ""),
)


def _check_byzfl(cfg) -> None:
    from . import byzfl_ref

    byzfl_ref._choose(byzfl_ref.AGGREGATORS, str(cfg.strategy.aggregator), "strategy.aggregator")
    pre = cfg.strategy.pre
    if isinstance(pre, str) or not all(isinstance(x, str) for x in pre):
        raise ConfigError(f"strategy.pre must be a list of names, e.g. strategy.pre=[nnm], got {pre!r}")
    for x in pre:
        byzfl_ref._choose(byzfl_ref.PRE_AGGREGATORS, x, "strategy.pre entry")


def _check_federation(cfg) -> None:
    n, f = int(cfg.fed.num_clients), int(cfg.fed.num_malicious)
    if f > n:
        raise ConfigError(f"fed.num_malicious={f} exceeds fed.num_clients={n}; lower num_malicious or add clients")
    if cfg.attack.name not in ("none", "stream_poison") and f == 0:
        raise ConfigError(f"attack={cfg.attack.name} needs fed.num_malicious >= 1 (or attack=none)")
    if cfg.attack.name == "stream_poison" and cfg.attack.victims > n - f:
        raise ConfigError(f"attack.victims={cfg.attack.victims} exceeds the {n - f} honest clients")
    if cfg.attack.name in OMNISCIENT_ATTACKS and cfg.attack.get("optimal") and cfg.strategy.name != "byzfl":
        raise ConfigError(f"attack.optimal=true searches the attack against a ByzFL aggregator; use strategy=byzfl "
                          f"or attack.optimal=false (strategy={cfg.strategy.name})")


def _check_adaptive(cfg) -> None:
    if int(cfg.attack.probe_size) >= int(cfg.attack.val_size):
        raise ConfigError(f"attack.probe_size={cfg.attack.probe_size} must be below attack.val_size="
                          f"{cfg.attack.val_size} (the attacker's probe is part of its validation batch)")


def _check_dgc(cfg) -> None:
    s = cfg.strategy
    if s.gate == "history":
        k = cfg.fed.clients_per_round
        k = cfg.fed.num_clients if k is None else k
        if cfg.protocol == "harness" or (isinstance(k, int) and k < 3):
            raise ConfigError("strategy.gate=history judges each update against the round's other updates and "
                              f"needs at least 3 per round (here {1 if cfg.protocol == 'harness' else k}); use "
                              "strategy=dgc_paper (the fitted P_t = mu + tau * t) or more clients per round")
    if (s.mu is None) != (s.tau is None):
        raise ConfigError("set both strategy.mu and strategy.tau, or neither (then both are fitted for "
                          "strategy.target_fpr)")
    if s.probe_size > cfg.split.probe:
        raise ConfigError(f"strategy.probe_size={s.probe_size} exceeds split.probe={cfg.split.probe}")


def _check_split(cfg) -> None:
    b = cfg.split.burnin
    number = isinstance(b, (int, float)) and not isinstance(b, bool)
    share = number and 0 < b < 1
    if not (share or (number and b >= 1 and float(b).is_integer())):
        raise ConfigError(f"split.burnin={b!r}: give a share of the training set in (0, 1) (e.g. 0.8) or a number of "
                          "images (e.g. 40000)")
    n = round(b * int(cfg.dataset.train_size)) if share else b  # nominal size; make_split checks the files' own
    if cfg.split.probe + int(cfg.split.calib or 0) >= n:
        raise ConfigError(f"split.probe + split.calib must be smaller than split.burnin ({n} images); lower them or "
                          "raise split.burnin")


def key_files(num_clients: int) -> list[str]:
    """The files a ``deployment.keys`` folder holds (what :func:`app.pki.federation_keys` writes)."""
    return ["ca.crt", "superlink.crt", "superlink.key"] + [f"node-{i}{s}" for i in range(num_clients) for s in ("", ".pub")]


def _check_keys(cfg) -> None:
    folder = OmegaConf.select(cfg, "deployment.keys")
    if folder is None:
        return
    missing = [f for f in key_files(int(cfg.fed.num_clients)) if not (Path(str(folder)).expanduser() / f).is_file()]
    if missing:
        raise ConfigError(f"deployment.keys={folder} lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; "
                          "put your CA, the SuperLink's certificate and key (for 127.0.0.1) and one OpenSSH EC key pair "
                          "per SuperNode there, or set deployment.keys=null for a throwaway set per run")


CHECKS = (
    (lambda cfg: OmegaConf.select(cfg, "engine") == "deployment", _check_keys),
    (_when("strategy", "byzfl"), _check_byzfl),
    (_always, _check_federation),
    (_when("attack", "adaptive_update"), _check_adaptive),
    (_when("strategy", "dgc"), _check_dgc),
    (_always, _check_split),
)


def validate(cfg: DictConfig) -> None:
    """Check every value a run depends on (:data:`ENUMS`, :data:`RANGES`, then the rules that tie several keys
    together, :data:`CHECKS`); raise ConfigError naming the fix."""
    ray_address(cfg)
    engine(cfg)
    for when, path, allowed, hint in ENUMS:
        if when(cfg):
            val = OmegaConf.select(cfg, path)
            if val not in allowed:
                raise ConfigError(f"unknown {path} '{val}'; choose one of {list(allowed)}{hint}")
    for when, path, lo, hi, flags in RANGES:
        if when(cfg):
            _num(cfg, path, lo, hi(cfg) if callable(hi) else hi, integer=INT in flags, lo_open=OPEN in flags,
                 allow_none=NONE in flags)
    for when, check in CHECKS:
        if when(cfg):
            check(cfg)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def to_json(cfg: DictConfig | dict) -> str:
    data = cfg if isinstance(cfg, dict) else to_container(cfg)
    return json.dumps(data, sort_keys=True)


def from_json(text: str) -> DictConfig:
    return OmegaConf.create(json.loads(text))


def config_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_run_config(run_config: dict[str, Any]) -> DictConfig:
    """Build the config from Flower's run config: config-file wins, else overrides."""
    path = str(run_config.get("config-file", "") or "")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config-file {path} does not exist; pass an absolute path written by fl-mdisc run")
        cfg = OmegaConf.load(p)
        OmegaConf.set_struct(cfg, False)
        validate(cfg)
        return cfg
    return compose(split_overrides(str(run_config.get("overrides", ""))))


def resolve_paths(cfg: DictConfig, base: Path | None = None) -> None:
    """Make data_root, cache_dir and out_dir absolute (Flower's SuperLink has its own cwd)."""
    base = base or Path.cwd()
    if cfg.data_root is None:
        cfg.data_root = os.environ.get("FL_MDISC_DATA") or str(base / "data")
    if cfg.cache_dir is None:
        cfg.cache_dir = os.environ.get("FL_MDISC_CACHE") or str(base / ".cache" / "fl-mdisc")
    cfg.data_root = str(Path(cfg.data_root).expanduser().resolve())
    cfg.cache_dir = str(Path(cfg.cache_dir).expanduser().resolve())
    if cfg.out_dir is not None:
        cfg.out_dir = str(Path(cfg.out_dir).expanduser().resolve())
