"""Build the server strategy chain from the config:
ServerSGD(ReplyValidator([GC|DGC](SampledParticipation(base)))).

The base is a Flower strategy (FedAvg, FedMedian, FedTrimmedAvg, MultiKrum) used for its aggregation only; which
clients take part is decided by SampledParticipation (reproducible K of N: fl_mdisc/sampling.py)."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, MultiKrum

from .dgc import DiscrepancyAwareClipping
from .gc import GradientClipping
from .sampling import SampledParticipation
from .server_opt import ServerSGD
from .validate import ReplyValidator


def build_base(cfg):
    n = int(cfg.fed.num_clients)
    kw = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_evaluate_nodes=0,
              min_available_nodes=n)
    name = cfg.strategy.name
    if name in ("st", "gc", "dgc"):
        return FedAvg(**kw)
    if name == "median":
        return FedMedian(**kw)
    if name == "trimmed_mean":
        return FedTrimmedAvg(beta=float(cfg.strategy.beta), **kw)
    if name == "multikrum":
        return MultiKrum(num_malicious_nodes=int(cfg.strategy.num_malicious),
                         num_nodes_to_select=int(cfg.strategy.num_to_select), **kw)
    raise ValueError(f"unknown strategy {name!r}")


def build_strategy(cfg, probe_md=None, set_hist=None, malicious=()):
    """Return (outer strategy, clipping wrapper or None, validator); ``outer.sampler`` is the sampling wrapper."""
    from fl_mdisc.sampling import participants

    sampler = SampledParticipation(build_base(cfg), lambda rnd, phase: participants(cfg, rnd, phase, malicious))
    inner = sampler
    clip = None
    s = cfg.strategy
    missing = [k for k in (("clip_norm",) if s.name == "gc" else ("clip_norm", "mu", "tau") if s.name == "dgc" else ())
               if s.get(k) is None]
    if missing:
        raise ValueError(f"strategy.{'/'.join(missing)} not set: call fl_mdisc.calibration.apply_calibration(cfg, "
                         "entry) first (the ServerApp does) or give them explicitly")
    if s.name == "gc":
        clip = inner = GradientClipping(inner, float(s.clip_norm), norm=str(s.get("norm", "l2")))
    elif s.name == "dgc":
        clip = inner = DiscrepancyAwareClipping(
            inner, float(s.clip_norm), float(s.mu), float(s.tau), probe_md=probe_md, set_hist=set_hist,
            md_source=str(s.md_source), hist_lag=int(s.hist_lag) if s.hist == "lag" else None,
            step_scale=float(cfg.fed.server_lr), mode=str(s.get("mode", "clip")),
            statistic=str(s.get("statistic", "absolute")), norm=str(s.get("norm", "l2")))
    validator = ReplyValidator(inner)
    outer = ServerSGD(validator, lr=float(cfg.fed.server_lr), momentum=float(cfg.fed.server_momentum))
    outer.sampler = sampler
    return outer, clip, validator
