"""Reproducible partial participation: which K of the N clients take part in a round.

Source: client sampling of FedAvg (McMahan et al., AISTATS 2017: "a random fraction C of clients" each round),
the setting of the FL-security benchmarks our users compare with (Blades, ByzFL, FLPoison: 10 of 100 clients).

The rule. Round r (1-based) of a run with seed s samples K of the N partition ids uniformly without replacement::

    S_r = sorted( Generator(PCG64([s, r, N, K, SALT])).choice(N, K, replace=False) )

a pure function of (seed, round, N, K): a run replays exactly, a resumed run continues with the same draws, and a
client can compute its own participation count (its stream position) without any state. Attackers are drawn like
everyone else. Over R rounds each client takes part R*K/N times in expectation (binomial spread).

Why not Flower's own sampling: ``FedAvg.configure_train`` calls ``sample_nodes``, which runs ``random.sample`` over
node ids that are random 64-bit numbers in a set (different order every run), with the module-global ``random``
that a heartbeat thread of the same process also draws from (../shared/notes/flower-1.42-scaleout.md, 3.1).
Measured: not reproducible. Here the draw is over partition ids, and the server maps them to node ids it learnt
from each node's own configuration (``strategies/sampling.py``).

The trigger round. An accumulative attacker fires its trigger when it chooses; with K of N it can only fire in a
round it takes part in, so it waits for its next participation. We shorten that wait to the round after the
accumulation phase: the trigger round is the usual draw, and the attackers drawn in it fire; when the draw holds
no attacker, one attacker (drawn by a second generator) replaces one drawn honest client, so every run has a
trigger and the trigger round has K participants as any other (:func:`trigger_participants`). With K = N every
attacker fires, as before.

Streams. A client consumes its stream one batch per *participation*: its j-th participation (0-based, j = number of
earlier rounds in which it was sampled) takes batch j of its stream (:func:`participation_index`), so no sample is
skipped or repeated within a pass however rarely it is drawn. With K = N, j = r - 1 (the earlier behaviour).
"""

from __future__ import annotations

import functools

import numpy as np

SALT = 0x5A3C_91E7


def sample_round(seed: int, rnd: int, n: int, k: int) -> tuple[int, ...]:
    """The sorted partition ids taking part in round ``rnd`` (1-based): K of N, uniform without replacement."""
    if rnd < 1:
        raise ValueError(f"rounds are 1-based, got {rnd}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= clients_per_round <= num_clients, got K={k}, N={n}")
    if k == n:
        return tuple(range(n))
    rng = np.random.default_rng([int(seed), int(rnd), int(n), int(k), SALT])
    return tuple(sorted(int(i) for i in rng.choice(n, size=k, replace=False)))


def trigger_participants(seed: int, rnd: int, n: int, k: int, malicious) -> tuple[int, ...]:
    """The trigger round: the usual draw; when it holds no attacker, one attacker (drawn) replaces one drawn honest
    client (see the module doc)."""
    draw = sample_round(seed, rnd, n, k)
    mal = sorted(int(m) for m in malicious)
    if not mal or any(p in mal for p in draw):
        return draw
    rng = np.random.default_rng([int(seed), int(rnd), int(n), int(k), SALT, 1])
    attacker = int(rng.choice(mal))
    out = list(draw)
    out.pop(int(rng.integers(len(out))))
    return tuple(sorted(out + [attacker]))


class _Counts:
    """Cumulative participation counts of one (seed, N, K), extended on demand (rounds x N int32)."""

    def __init__(self, seed: int, n: int, k: int) -> None:
        self.seed, self.n, self.k = seed, n, k
        self.rows = [np.zeros(n, dtype=np.int32)]  # rows[r] = counts over rounds 1..r

    def upto(self, r: int) -> np.ndarray:
        while len(self.rows) <= r:
            rnd = len(self.rows)
            row = self.rows[-1].copy()
            row[list(sample_round(self.seed, rnd, self.n, self.k))] += 1
            self.rows.append(row)
        return self.rows[r]


@functools.lru_cache(maxsize=16)
def _counts(seed: int, n: int, k: int) -> _Counts:
    return _Counts(seed, n, k)


def participation_index(seed: int, rnd: int, n: int, k: int, pid: int) -> int:
    """How many earlier rounds (1 .. rnd-1) sampled ``pid``: the 0-based index of its current participation."""
    if k >= n:
        return int(rnd) - 1
    return int(_counts(int(seed), int(n), int(k)).upto(int(rnd) - 1)[int(pid)])


def clients_per_round(cfg) -> int:
    """K of a config (``fed.clients_per_round``; null: every client, N)."""
    n = int(cfg.fed.num_clients)
    k = cfg.fed.get("clients_per_round")
    return n if k is None else int(k)


def participants(cfg, rnd: int, phase: str, malicious) -> tuple[int, ...]:
    """Who takes part in round ``rnd`` of a run (``phase`` 'trigger': the attackers fire together)."""
    n, k, seed = int(cfg.fed.num_clients), clients_per_round(cfg), int(cfg.seed)
    if phase == "trigger":
        return trigger_participants(seed, rnd, n, k, malicious)
    return sample_round(seed, rnd, n, k)


def stream_step(cfg, rnd: int, pid: int) -> int:
    """The stream batch a client takes in round ``rnd``: its participation index."""
    return participation_index(int(cfg.seed), rnd, int(cfg.fed.num_clients), clients_per_round(cfg), pid)
