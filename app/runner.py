"""What every command does before ``flwr run``: compose and check the config, write it, warm the caches, size the
clients' resources (shared by the CLI, the sweeps and the benchmark, so that none of them imports another)."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf

from fl_mdisc.config import compose, conf_dir, resolve_paths
from fl_mdisc.errors import FlMdiscError


def project_dir() -> Path:
    root = conf_dir().parent
    if not (root / "pyproject.toml").is_file():
        raise FlMdiscError(f"{root} is not a checkout of fl-mdisc (no pyproject.toml); flwr run needs the app folder")
    return root


def prepare(overrides: list[str], tag: str | None = None):
    """Compose + validate + resolve paths + check data; write the resolved config. Returns (cfg, path)."""
    from fl_mdisc.experiment import make_plan

    cfg = compose(overrides)
    resolve_paths(cfg)
    if cfg.out_dir is None:
        tag = tag or f"{cfg.strategy.name}-{cfg.attack.name}-{cfg.defense.name}-s{cfg.seed}"
        cfg.out_dir = str((Path.cwd() / "outputs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}").resolve())
    make_plan(cfg)  # data present and partitions feasible, before anything starts
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    return cfg, path


def warm_burnin(cfg) -> None:
    """Fill the caches a cell's run reads, here, before Ray starts, on otherwise idle cores: the burn-in, the DGC-aware
    attacker's own calibration and the server's calibration fit (C, DGC's threshold). The server would compute the
    fit itself on a cache miss; in a parallel sweep two lanes starting the same federation then both computed it,
    each on half the machine (measured, grid seed 2: the FedAvg setting's DGC fit twice, 694 s and 632 s)."""
    import copy

    import torch

    from fl_mdisc.adaptive import prepare_attackers
    from fl_mdisc.burnin import ensure_burnin
    from fl_mdisc.calibration import apply_calibration
    from fl_mdisc.train import pick_device

    torch.set_num_threads(int(cfg.server_threads))
    say = lambda m: print(f"fl-mdisc: {m}", flush=True)  # noqa: E731
    entry = ensure_burnin(cfg, log=say)
    prepare_attackers(cfg, entry, log=say, device=str(pick_device(cfg)))  # the DGC-aware attacker's own calibration
    apply_calibration(copy.deepcopy(cfg), entry, log=say)  # as the ServerApp calls it; the cell's config stays as is


def gpus_per_client(cfg) -> float:
    """Ray client resources: with a GPU (and device != cpu) up to 4 ClientApp actors share it; else none."""
    if cfg.device == "cpu":
        return 0.0
    import torch

    return 1.0 / max(1, min(int(cfg.fed.num_clients), 4)) if torch.cuda.is_available() else 0.0
