"""Build the server strategy chain from the config:
ServerSGD([OmniscientAdversary](ReplyValidator([GC|DGC](SampledParticipation(base))))).

The base is a Flower strategy (FedAvg, FedMedian, FedTrimmedAvg, MultiKrum, or ByzFL's aggregators through
``strategies.byzfl``) used for its aggregation only; the omniscient reference attackers (``attack=alie|ipm|...``)
are a simulation step outside every defence (``strategies.omniscient``); which
clients take part is decided by SampledParticipation (reproducible K of N: fl_mdisc/sampling.py)."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, MultiKrum

from .dgc import DiscrepancyAwareClipping, PaperGate
from .gc import GradientClipping
from .sampling import SampledParticipation
from .server_opt import ServerSGD
from .validate import ReplyValidator


def build_base(cfg):
    n = int(cfg.fed.num_clients)
    kw = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_evaluate_nodes=0,
              min_available_nodes=n)
    name = cfg.strategy.name
    if name in ("st", "gc", "dgc", "fldetector"):
        return FedAvg(**kw)
    if name == "median":
        return FedMedian(**kw)
    if name == "trimmed_mean":
        return FedTrimmedAvg(beta=float(cfg.strategy.beta), **kw)
    if name == "byzfl":
        from fl_mdisc import byzfl_ref

        from .byzfl import ByzFLAggregation

        p = byzfl_params(cfg)
        return ByzFLAggregation(byzfl_ref.make_aggregator(str(cfg.strategy.aggregator), p),
                                byzfl_ref.make_pre([str(x) for x in cfg.strategy.pre], p), seed=int(cfg.seed), **kw)
    if name == "multikrum":
        from fl_mdisc.sampling import clients_per_round

        f = defence_f(cfg)[0]
        m = cfg.strategy.get("num_to_select")
        return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=int(m) if m is not None else
                         max(1, clients_per_round(cfg) - f), **kw)
    raise ValueError(f"unknown strategy {name!r}")


def defence_f(cfg) -> tuple[int, str]:
    """(f per round, why) of the rules that need one: ``strategy.f`` when set, else what the server assumes
    (:mod:`fl_mdisc.assumption`: ``assume.f``, or the most the rule tolerates when nothing is assumed)."""
    from fl_mdisc.assumption import assumed_f, krum_max_f, majority_max_f, per_round_f
    from fl_mdisc.sampling import clients_per_round

    s = cfg.strategy
    if s.get("f") is not None and s.name in ("byzfl", "multikrum"):
        return int(s.f), f"strategy.f={int(s.f)} (given)"
    k = clients_per_round(cfg)
    f_max = krum_max_f(k) if s.name == "multikrum" else majority_max_f(k)
    return per_round_f(assumed_f(cfg), int(cfg.fed.num_clients), k, f_max)


def byzfl_params(cfg) -> dict:
    """Parameters of the ByzFL pieces: f (:func:`defence_f`), the radius of centered clipping and the bound of the
    clipping pre-aggregation (null: C, the calibrated median honest update norm, the bound GC uses), and the rest as
    configured (null: ByzFL's default)."""
    s = cfg.strategy if cfg.strategy.name == "byzfl" else {}
    f = defence_f(cfg)[0] if s else 0
    C = s.get("clip_norm") if s else None
    return {"f": int(f), "tau": C if C is not None else None, "c": C, "L": s.get("cc_iters") if s else None,
            "nu": s.get("geomed_nu") if s else None, "T": s.get("geomed_iters") if s else None,
            "s": s.get("bucket_size") if s else None, "idx": s.get("monna_idx") if s else None}


def attack_params(cfg) -> dict:
    a = cfg.attack
    return {k: a.get(k) for k in ("tau", "mu", "sigma", "epsilon", "optimal") if a.get(k) is not None}


def build_strategy(cfg, probe_md=None, malicious=()):
    """Return (outer strategy, defence wrapper (GC, DGC, FLDetector) or None, validator); ``outer.sampler`` is the
    sampling wrapper."""
    from fl_mdisc.sampling import clients_per_round, participants

    base = build_base(cfg)
    sampler = SampledParticipation(base, lambda rnd, phase: participants(cfg, rnd, phase, malicious))
    if cfg.strategy.name == "byzfl":
        base.reference = lambda: sampler.current_arrays
    inner = sampler
    clip = None
    s = cfg.strategy
    paper = s.name == "dgc" and s.gate == "paper"
    missing = [k for k in (("clip_norm",) if s.name in ("gc", "dgc") and not paper else ("clip_norm", "mu", "tau")
                           if paper else ()) if s.get(k) is None]
    if missing:
        raise ValueError(f"strategy.{'/'.join(missing)} not set: call fl_mdisc.calibration.apply_calibration(cfg, "
                         "entry) first (the ServerApp does) or give them explicitly")
    if s.name == "gc":
        clip = inner = GradientClipping(inner, float(s.clip_norm), norm=str(s.norm))
    elif s.name == "dgc":
        if paper:
            gate = PaperGate(float(s.mu), float(s.tau))
        else:
            from fl_mdisc.history import HistoryGate

            gate = HistoryGate(alpha=float(s.alpha), pool_rounds=int(s.pool_rounds), kappa=float(s.kappa))
        clip = inner = DiscrepancyAwareClipping(inner, float(s.clip_norm), gate, probe_md=probe_md,
                                                step_scale=float(cfg.fed.server_lr), mode=str(s.mode),
                                                norm=str(s.norm))
    elif s.name == "fldetector":
        from .fldetector import FLDetector

        clip = inner = FLDetector(inner, window=int(s.window), memory=int(s.memory), warmup=int(s.warmup),
                                  seed=int(cfg.seed))
    validator = ReplyValidator(inner)
    top = validator
    from fl_mdisc import byzfl_ref

    if cfg.attack.name in byzfl_ref.ATTACKS:  # the omniscient attackers: a simulation step outside every defence
        from .omniscient import OmniscientAdversary

        agg = pre = None
        if cfg.strategy.name == "byzfl":  # its own instances: a search must not move the strategy's state (CC's centre)
            p = byzfl_params(cfg)
            agg = byzfl_ref.make_aggregator(str(cfg.strategy.aggregator), p)
            pre = byzfl_ref.make_pre([str(x) for x in cfg.strategy.pre], p)
        attack = byzfl_ref.make_attack(str(cfg.attack.name), attack_params(cfg), agg=agg, pre=pre,
                                       f=byzfl_ref.attackers_per_round(len(malicious), int(cfg.fed.num_clients),
                                                                       clients_per_round(cfg)))
        top = OmniscientAdversary(validator, attack, malicious, node_to_pid=lambda: validator.node_to_pid,
                                  seed=int(cfg.seed))
    outer = ServerSGD(top, lr=float(cfg.fed.server_lr), momentum=float(cfg.fed.server_momentum))
    outer.sampler = sampler
    return outer, clip, validator
