"""The global quota headroom policy: how much of a project's global limit each region may set as its own limit.

Pure functions, no I/O: the coordinator feeds in the regions' last reports and applies what comes out.

A project has, per resource (``instances``, ``cores``, ``ram``, ...), a global hard limit H across all regions.
Each region enforces its own OpenStack quota limit; isthmus keeps the sum of those limits at or below H, also
while two regions grow at once and while new limits are being applied. (Kingbird gave every region all of the
remaining headroom at once, so two busy regions together could overshoot H; this policy never does.)

Policy, for one resource of one project (``allocate``):

1. **Stale regions** (unreachable) keep the limit they last confirmed, or their usage if isthmus never set one:
   they may still be enforcing it and nothing can change it, so it is counted against H first.
2. **No limit below usage.** Every other region's target is at least its usage. If the stale limits plus the
   usage of the others already exceed H, there is no headroom: every target is its usage ("over hard limit").
3. **Headroom** = H - (stale limits) - (usage of the other regions). Each of the n reachable regions first gets
   a floor of ``max(floor, floor(floor_fraction * H / n))``, so a quiet region can still start an instance; if
   the headroom is smaller than n floors it is split equally instead. What is left is shared in proportion to
   each region's ``recent`` use (growth over the last window; negative counts as 0; all 0 means an equal
   split). Integer shares use largest-remainder rounding (ties go to the region whose name sorts first), so the
   headroom is given out exactly: with non-negative headroom the targets sum to exactly H.
4. **Safe to set now.** A region moving down gets its target at once (``now = target``: lowerings are applied
   first and are always safe). A region moving up gets only what is free now: the free budget is
   H - (sum of every region's current limit), where a region moving down still counts with its old, higher
   limit until it has confirmed the lowering. The regions moving up share the free budget in proportion to how
   far each still has to go. So whatever order the regions apply their new limits in, the sum of
   ``max(current, now)`` stays within H (or, if the current limits already exceed H because H was cut, does
   not grow). Once the caller passes the confirmed limits back in (``applied`` := ``now``), the next call
   completes the raisings: two rounds reach the targets.

"Current limit" is ``applied``, the limit the region last confirmed. A region isthmus never set
(``applied is None``) counts with its usage: its old limit was not set by isthmus, and counting it as anything
above usage would only hold back the first allocation; from the first confirmed limit on, it counts as applied.
A current limit of -1 (OpenStack's "unlimited", left from a time without a global limit) counts as unbounded:
that region is lowered at once and no region is raised until the lowering is confirmed.
A negative H means no global limit: every reachable region gets -1.

Worked example: H = 200, default floor (1, 5%). Region ``north`` is stale at 20; ``east`` uses 60 with limit
100 and grew by 1 recently; ``west`` uses 40 with limit 40 and grew by 7; ``south`` is new (usage 0, never set).

- Headroom = 200 - 20 - (60 + 40 + 0) = 80. Floor = max(1, floor(0.05 * 200 / 3)) = 3 each, 71 left.
- 71 shared 1:7 between east and west: 8.875 and 62.125, rounded to 8 and 62 with 1 left over, which goes
  to the larger remainder (east, .875): east 9, west 62, south 0.
- Targets: east 60 + 3 + 9 = 72, west 40 + 3 + 62 = 105, south 0 + 3 = 3, north 20 (sum 200).
- Now: east lowers 100 -> 72 at once. Free budget = 200 - (100 + 40 + 0 + 20) = 40, but west needs 65 and
  south 3: 40 shared 65:3 is 38.2 and 1.8, rounded to 38 and 2. So west goes to 78 now, south to 2
  (100 + 78 + 2 + 20 = 200: safe in any order).
- Next round, with east confirmed at 72: free budget = 200 - (72 + 78 + 2 + 20) = 28 = 27 + 1 that west and
  south still need, so west reaches 105 and south 3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

UNLIMITED = -1  # OpenStack's quota value for "no limit"


@dataclass(frozen=True)
class RegionQuota:
    """What the coordinator knows about one region's use of one resource."""

    usage: int  # in use now (last report)
    applied: int | None  # the limit the region last confirmed applied (None: never set by isthmus / unknown)
    recent: float = 0.0  # recent use, e.g. growth over the last window: the weight for sharing headroom
    stale: bool = False  # unreachable: its applied limit is frozen and counted as is


@dataclass(frozen=True)
class Allocation:
    """Where one region's limit should go, and how far it may go now."""

    target: int  # where the policy wants this region's limit
    now: int  # the limit that is safe to set now (between applied and target)
    reason: str  # for operators, e.g. "floor of headroom 3/80", "share of headroom 12/40; lowered first"


def unlimited(hard: int) -> bool:
    """Whether a global hard limit means "no limit" (any negative value, OpenStack uses -1)."""
    return hard < 0


def soft_crossed(soft: int, total_before: int, total_now: int) -> bool:
    """Whether the global usage went up to or past the soft limit between two reports.

    Only the upward crossing counts (so a warning is raised once, not on every report above the limit);
    a negative soft limit means there is none.
    """
    return soft >= 0 and total_before < soft <= total_now


def allocate(
    hard: int, regions: Mapping[str, RegionQuota], *, floor: int = 1, floor_fraction: float = 0.05
) -> dict[str, Allocation]:
    """Each region's target and safe-now limit under the global hard limit ``hard`` (see the module docstring).

    ``floor`` is the smallest headroom a reachable region gets when there is enough for all; ``floor_fraction``
    raises that floor to a fraction of ``hard`` split over the reachable regions. The result has one entry per
    region, in name order, and depends only on the arguments. Raises ``ValueError`` for a negative usage, an
    applied limit below -1, a ``recent`` that is not finite, a negative ``floor`` or a ``floor_fraction``
    outside [0, 1].
    """
    _check(regions, floor, floor_fraction)
    names = sorted(regions)
    live = [n for n in names if not regions[n].stale]
    current = {n: _current(regions[n]) for n in names}

    out: dict[str, Allocation] = {}
    for n in names:
        if regions[n].stale:
            note = "" if regions[n].applied is not None else " (its usage: never set)"
            out[n] = Allocation(current[n], current[n], f"stale: keeps {current[n]}{note}")
    if unlimited(hard):
        for n in live:
            out[n] = Allocation(UNLIMITED, UNLIMITED, "unlimited")
        return {n: out[n] for n in names}

    targets, reasons = _targets(hard, regions, live, current, floor, floor_fraction)
    now = _safe_now(hard, targets, current, live)
    for n in live:
        reason = reasons[n]
        if current[n] == UNLIMITED or targets[n] < current[n]:
            reason += "; lowered first"
        elif now[n] < targets[n]:
            reason += f"; raised {now[n] - current[n]} of {targets[n] - current[n]} now, the rest after lowerings"
        out[n] = Allocation(targets[n], now[n], reason)
    return {n: out[n] for n in names}


def _check(regions: Mapping[str, RegionQuota], floor: int, floor_fraction: float) -> None:
    if floor < 0:
        raise ValueError(f"floor must not be negative, got {floor}")
    if not 0.0 <= floor_fraction <= 1.0:
        raise ValueError(f"floor_fraction must be within [0, 1], got {floor_fraction}")
    for name, q in regions.items():
        if q.usage < 0:
            raise ValueError(f"region {name}: usage must not be negative, got {q.usage}")
        if q.applied is not None and q.applied < UNLIMITED:
            raise ValueError(f"region {name}: applied limit must be -1 (unlimited) or more, got {q.applied}")
        if not math.isfinite(q.recent):
            raise ValueError(f"region {name}: recent use must be finite, got {q.recent}")


def _current(q: RegionQuota) -> int:
    """The limit a region counts with now: what it confirmed, or its usage if isthmus never set one."""
    return q.applied if q.applied is not None else q.usage


def _targets(
    hard: int,
    regions: Mapping[str, RegionQuota],
    live: list[str],
    current: Mapping[str, int],
    floor: int,
    floor_fraction: float,
) -> tuple[dict[str, int], dict[str, str]]:
    """Targets of the reachable regions: usage plus their share of the headroom, and why."""
    usage = {n: regions[n].usage for n in live}
    stale_limits = [current[n] for n in regions if regions[n].stale]
    if not live:
        return {}, {}
    if UNLIMITED in stale_limits:
        return usage, dict.fromkeys(live, "over hard limit: a stale region has no limit")
    headroom = hard - sum(stale_limits) - sum(usage.values())
    if headroom < 0:
        why = f"over hard limit: stale limits {sum(stale_limits)} + usage {sum(usage.values())} > {hard}"
        return usage, dict.fromkeys(live, why)
    if headroom == 0:
        return usage, dict.fromkeys(live, "no headroom")

    # repr() gives the decimal the operator wrote (0.07, not 0.07000000000000000666), so the floor is exact.
    floor_each = max(floor, math.floor(Fraction(repr(floor_fraction)) * hard / len(live)))
    if headroom < floor_each * len(live):
        base = _largest_remainder(headroom, dict.fromkeys(live, Fraction(0)))
        shares = dict.fromkeys(live, 0)
    else:
        base = dict.fromkeys(live, floor_each)
        rest = headroom - floor_each * len(live)
        shares = _largest_remainder(rest, {n: Fraction(max(regions[n].recent, 0.0)) for n in live})
    targets = {n: usage[n] + base[n] + shares[n] for n in live}
    reasons = {
        n: f"{'share' if shares[n] else 'floor'} of headroom {base[n] + shares[n]}/{headroom}" for n in live
    }
    return targets, reasons


def _safe_now(hard: int, targets: Mapping[str, int], current: Mapping[str, int], live: list[str]) -> dict[str, int]:
    """How far each reachable region may go now without the sum of max(current, now) passing ``hard``."""
    now = {n: targets[n] for n in live}
    want = {n: targets[n] - current[n] for n in live if current[n] != UNLIMITED and targets[n] > current[n]}
    if not want:
        return now
    # Lowerings not yet confirmed still count at the old limit; an unlimited region leaves nothing free.
    free = 0 if UNLIMITED in current.values() else hard - sum(current.values())
    if free >= sum(want.values()):
        return now
    given = _largest_remainder(max(free, 0), {n: Fraction(w) for n, w in want.items()})
    for n in want:
        now[n] = current[n] + given[n]
    return now


def _largest_remainder(total: int, weights: Mapping[str, Fraction]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` (equally if all are 0): exact, deterministic integer shares.

    Everyone gets the floor of their exact share; what is left goes one each to the largest remainders, ties to
    the name that sorts first. No share exceeds its exact value rounded up.
    """
    names = sorted(weights)
    if not names:
        return {}
    weight_sum = sum(weights.values(), Fraction(0))
    if weight_sum == 0:
        weights, weight_sum = dict.fromkeys(names, Fraction(1)), Fraction(len(names))
    exact = {n: total * weights[n] / weight_sum for n in names}
    shares = {n: math.floor(exact[n]) for n in names}
    left = total - sum(shares.values())
    for n in sorted(names, key=lambda n: (shares[n] - exact[n], n))[:left]:
        shares[n] += 1
    return shares
