"""Scoring a defence's flags against the simulated truth: one convention for every report.

A run's ``rounds.jsonl`` holds, per round, each client's entry with ``malicious`` (the truth, written by the server
for scoring only; no defence reads it) and, for defences that decide per update, ``flagged``. Over the accumulation
rounds (the trigger round is a single event outside the accumulation and is not scored):

* honest FPR = flagged honest updates / honest updates;
* recall = flagged attacker updates / the attackers' *poisoning* updates (an attacker pausing its attack sends an
  honest update, ``attack-paused``; those rounds are not poisoning rounds and count in neither part);
* precision = flagged attacker updates / flagged updates (paused attacker updates excluded on both sides);
* first flag: per attacker, the first round it was flagged in (None: never), beside its first participation.

>>> rounds = [{"round": 1, "phase": "accumulate", "clients": [
...     {"partition-id": 0, "malicious": False, "flagged": False},
...     {"partition-id": 9, "malicious": True, "flagged": False}]},
...           {"round": 2, "phase": "accumulate", "clients": [
...     {"partition-id": 0, "malicious": False, "flagged": True},
...     {"partition-id": 9, "malicious": True, "flagged": True}]}]
>>> d = detection(rounds)
>>> d["honest_fpr"], d["recall"], d["precision"], d["first_flag"]
(0.5, 0.5, 0.5, {'9': 2})
"""

from __future__ import annotations


def detection(rounds: list[dict]) -> dict | None:
    """Counts and rates of a run's flags (None when no entry carries ``flagged``)."""
    hon = hon_f = mal = mal_f = paused_f = 0
    first: dict[str, int | None] = {}
    seen: dict[str, int] = {}
    any_flag = False
    for r in rounds:
        if r.get("phase", "accumulate") != "accumulate":
            continue
        for c in r["clients"]:
            if "flagged" not in c:
                continue
            any_flag = True
            flagged = bool(c["flagged"])
            if c.get("malicious"):
                pid = str(c["partition-id"])
                seen.setdefault(pid, int(r["round"]))
                first.setdefault(pid, None)
                if flagged and first[pid] is None:
                    first[pid] = int(r["round"])
                if c.get("attack-paused"):
                    paused_f += flagged
                    continue
                mal += 1
                mal_f += flagged
            else:
                hon += 1
                hon_f += flagged
    if not any_flag:
        return None
    flagged_total = hon_f + mal_f
    return {"honest": hon, "honest_flagged": hon_f, "malicious": mal, "malicious_flagged": mal_f,
            "honest_fpr": hon_f / hon if hon else None, "recall": mal_f / mal if mal else None,
            "precision": mal_f / flagged_total if flagged_total else None,
            "first_flag": first, "first_seen": seen}
