"""What the server's defences may assume about the attackers: a bound the user states, never the simulated truth.

The simulation creates ``fed.num_malicious`` attackers; that number and the malicious set are for the simulated
attackers, the logs and the scoring only. A defence that needs a bound on the attackers reads ``assume.f``, an
assumption the user states ("at most f of the N clients are malicious"), and ``null`` means nothing is known
(tests/test_assumption.py fails if a defence reads the truth).

Rules that cannot run without an f (Multi-Krum, ByzFL's robust aggregators) need it per round, among the K
participants of a round::

    f_round = min( ceil(f * K / N), f_max )      with assume.f = f
    f_round = f_max                              with assume.f = null

where f_max is the largest f the rule tolerates (Krum: K >= 2 f + 3, Blanchard et al. 2017; most of ByzFL's
aggregators: K > 2 f). With nothing known the server takes the worst case its rule survives; it says which value it
used and why (:func:`per_round_f` returns the reason, the run's summary records it).
"""

from __future__ import annotations

import math

from .errors import ConfigError


def assumed_f(cfg) -> int | None:
    """``assume.f``: the user's bound on the malicious clients among the N, or None (nothing known)."""
    a = cfg.get("assume")
    f = None if a is None else a.get("f")
    if f is None:
        return None
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ConfigError(f"assume.f must be a whole number >= 0 or null (nothing known), got {f!r}")
    n = int(cfg.fed.num_clients)
    if f > n:
        raise ConfigError(f"assume.f={f} exceeds fed.num_clients={n}; assume at most {n} attackers")
    return int(f)


def per_round_f(f: int | None, n: int, k: int, f_max: int) -> tuple[int, str]:
    """(f among K participants, why): ceil(f K / N) capped at ``f_max``, or ``f_max`` when ``f`` is None.

    >>> per_round_f(None, 10, 10, krum_max_f(10))[0]
    3
    >>> per_round_f(10, 100, 10, krum_max_f(10))[0]
    1
    """
    f_max = max(0, int(f_max))
    if f is None:
        return f_max, f"nothing assumed: the most the rule tolerates with {k} participants"
    want = int(math.ceil(int(f) * k / n)) if n else 0
    if want > f_max:
        return f_max, f"assume.f={f} of {n}: {want} a round, capped at the {f_max} the rule tolerates"
    return want, f"assume.f={f} of {n}: ceil(f K / N) with K={k}"


def krum_max_f(k: int) -> int:
    """The largest f Krum tolerates among k updates: k >= 2 f + 3 (Blanchard et al. 2017)."""
    return max(0, (int(k) - 3) // 2)


def majority_max_f(k: int) -> int:
    """The largest f an honest-majority rule tolerates among k updates: k > 2 f."""
    return max(0, (int(k) - 1) // 2)


def describe(cfg) -> str:
    """One line for reports: what the server was told."""
    f = assumed_f(cfg)
    return "nothing assumed" if f is None else f"assumes f <= {f} of {int(cfg.fed.num_clients)}"
