"""The global quota headroom policy: worked examples, and its safety invariants under random regions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.coordinator.multisite.quota import Allocation, RegionQuota, allocate, soft_crossed, unlimited

# ---------------------------------------------------------------- worked examples

DOC_EXAMPLE = {
    "north": RegionQuota(usage=15, applied=20, stale=True),
    "east": RegionQuota(usage=60, applied=100, recent=1),
    "west": RegionQuota(usage=40, applied=40, recent=7),
    "south": RegionQuota(usage=0, applied=None),
}


def confirmed(regions: dict[str, RegionQuota], out: dict[str, Allocation]) -> dict[str, RegionQuota]:
    """The regions after each reachable one confirmed its ``now`` limit (stale ones cannot confirm anything)."""
    return {n: q if q.stale else RegionQuota(q.usage, out[n].now, q.recent, q.stale) for n, q in regions.items()}


def test_module_docstring_example() -> None:
    first = allocate(200, DOC_EXAMPLE)
    assert list(first) == ["east", "north", "south", "west"]
    assert {n: (a.target, a.now) for n, a in first.items()} == {
        "east": (72, 72), "west": (105, 78), "south": (3, 2), "north": (20, 20)}
    assert first["east"].reason == "share of headroom 12/80; lowered first"
    assert first["west"].reason == "share of headroom 65/80; raised 38 of 65 now, the rest after lowerings"
    assert first["south"].reason == "floor of headroom 3/80; raised 2 of 3 now, the rest after lowerings"
    assert first["north"].reason == "stale: keeps 20"

    second = allocate(200, confirmed(DOC_EXAMPLE, first))
    assert {n: (a.target, a.now) for n, a in second.items()} == {
        "east": (72, 72), "west": (105, 105), "south": (3, 3), "north": (20, 20)}
    assert second["west"].reason == "share of headroom 65/80"


def test_two_regions_growing_at_once_do_not_overshoot() -> None:
    # Kingbird would give each region all 20 of the remaining headroom: 60 + 60 > 100.
    regions = {"a": RegionQuota(40, 40, recent=10), "b": RegionQuota(40, 40, recent=10)}
    out = allocate(100, regions, floor_fraction=0)
    assert {n: (a.target, a.now) for n, a in out.items()} == {"a": (50, 50), "b": (50, 50)}


def test_first_allocation_of_regions_never_set_completes_at_once() -> None:
    regions = {"a": RegionQuota(10, None, recent=3), "b": RegionQuota(5, None, recent=1)}
    out = allocate(100, regions, floor=2, floor_fraction=0)
    # headroom 85: floors 2 + 2, 81 shared 3:1 -> 60.75 / 20.25 -> 61 / 20
    assert {n: (a.target, a.now) for n, a in out.items()} == {"a": (73, 73), "b": (27, 27)}


def test_floor_from_fraction_uses_the_written_decimal() -> None:
    # 0.07 * 300 / 3 is 7 exactly; as a binary float product it would be 6.99... and floor to 6.
    regions = {n: RegionQuota(0, None) for n in ("a", "b", "c")}
    regions["a"] = RegionQuota(0, None, recent=1)
    out = allocate(300, regions, floor_fraction=0.07)
    assert out["b"].target == 7 and out["c"].target == 7 and out["a"].target == 300 - 14
    assert out["b"].reason == "floor of headroom 7/300"


def test_headroom_below_the_floors_is_split_equally_remainder_by_name() -> None:
    regions = {n: RegionQuota(10, None, recent=r) for n, r in (("c", 9.0), ("b", 0.0), ("a", 5.0))}
    out = allocate(35, regions, floor=3)  # headroom 5 < 3 floors of 3
    assert {n: a.target for n, a in out.items()} == {"a": 12, "b": 12, "c": 11}


def test_all_recent_zero_is_an_equal_split_and_ties_go_by_name() -> None:
    regions = {n: RegionQuota(0, None) for n in ("z", "y", "x")}
    out = allocate(10, regions, floor=0, floor_fraction=0)
    assert {n: a.target for n, a in out.items()} == {"x": 4, "y": 3, "z": 3}


def test_negative_recent_counts_as_zero() -> None:
    regions = {"a": RegionQuota(0, None, recent=-5), "b": RegionQuota(0, None, recent=1)}
    out = allocate(10, regions, floor=0, floor_fraction=0)
    assert (out["a"].target, out["b"].target) == (0, 10)
    assert out["a"].reason == "floor of headroom 0/10"


def test_over_the_hard_limit_holds_everyone_at_usage() -> None:
    regions = {"a": RegionQuota(60, 70), "b": RegionQuota(50, 40), "s": RegionQuota(5, 10, stale=True)}
    out = allocate(100, regions)
    assert out["a"] == Allocation(60, 60, "over hard limit: stale limits 10 + usage 110 > 100; lowered first")
    # b must rise to its usage, but nothing is free while a's 70 and s's 10 stand: 70 + 40 + 10 > 100.
    assert (out["b"].target, out["b"].now) == (50, 40)
    assert out["s"] == Allocation(10, 10, "stale: keeps 10")


def test_no_headroom() -> None:
    out = allocate(30, {"a": RegionQuota(10, 10), "b": RegionQuota(20, 25)})
    assert out == {"a": Allocation(10, 10, "no headroom"), "b": Allocation(20, 20, "no headroom; lowered first")}


def test_stale_region_never_set_keeps_its_usage() -> None:
    out = allocate(50, {"s": RegionQuota(12, None, stale=True), "a": RegionQuota(0, None)})
    assert out["s"] == Allocation(12, 12, "stale: keeps 12 (its usage: never set)")
    assert out["a"].target == 38


def test_only_stale_regions() -> None:
    assert allocate(50, {"s": RegionQuota(3, 7, stale=True)}) == {"s": Allocation(7, 7, "stale: keeps 7")}
    assert allocate(50, {}) == {}


def test_no_global_limit() -> None:
    assert unlimited(-1) and not unlimited(0) and not unlimited(10)
    out = allocate(-1, {"a": RegionQuota(5, 10), "s": RegionQuota(1, 4, stale=True)})
    assert out == {"a": Allocation(-1, -1, "unlimited"), "s": Allocation(4, 4, "stale: keeps 4")}


def test_leaving_unlimited_lowers_first_and_raises_after() -> None:
    regions = {"a": RegionQuota(10, -1, recent=1), "b": RegionQuota(10, 10, recent=1)}
    first = allocate(100, regions, floor_fraction=0)
    assert first["a"] == Allocation(50, 50, "share of headroom 40/80; lowered first")
    # While a may still be unlimited nothing can be raised safely.
    assert (first["b"].target, first["b"].now) == (50, 10)
    second = allocate(100, confirmed(regions, first), floor_fraction=0)
    assert (second["b"].target, second["b"].now) == (50, 50)


def test_a_stale_unlimited_region_leaves_no_headroom() -> None:
    out = allocate(100, {"s": RegionQuota(5, -1, stale=True), "a": RegionQuota(10, 20), "b": RegionQuota(3, None)})
    assert out["s"] == Allocation(-1, -1, "stale: keeps -1")
    assert out["a"] == Allocation(10, 10, "over hard limit: a stale region has no limit; lowered first")
    assert out["b"] == Allocation(3, 3, "over hard limit: a stale region has no limit")


def test_cut_hard_limit_lowers_but_cannot_be_safe_until_confirmed() -> None:
    # The limits already in force sum to 80 > 50: the lowerings are safe, no raising happens until confirmed.
    regions = {"a": RegionQuota(5, 40, recent=0), "b": RegionQuota(5, 40, recent=0), "c": RegionQuota(5, None)}
    first = allocate(50, regions, floor_fraction=0)
    assert [(a.target, a.now) for a in first.values()] == [(17, 17), (17, 17), (16, 5)]
    second = allocate(50, confirmed(regions, first), floor_fraction=0)
    assert [(a.target, a.now) for a in second.values()] == [(17, 17), (17, 17), (16, 16)]


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="region a: usage"):
        allocate(10, {"a": RegionQuota(-1, None)})
    with pytest.raises(ValueError, match="region a: applied"):
        allocate(10, {"a": RegionQuota(1, -2)})
    with pytest.raises(ValueError, match="region a: recent"):
        allocate(10, {"a": RegionQuota(1, None, recent=float("nan"))})
    with pytest.raises(ValueError, match="floor must"):
        allocate(10, {}, floor=-1)
    with pytest.raises(ValueError, match="floor_fraction"):
        allocate(10, {}, floor_fraction=1.5)


def test_soft_crossed_counts_the_upward_crossing_only() -> None:
    assert soft_crossed(80, 79, 80)
    assert soft_crossed(80, 10, 95)
    assert not soft_crossed(80, 80, 90)  # already at or above: reported before
    assert not soft_crossed(80, 90, 70)  # downwards
    assert not soft_crossed(80, 10, 79)
    assert not soft_crossed(-1, 0, 1000)  # no soft limit


# ---------------------------------------------------------------- invariants


@st.composite
def quota_regions(draw: st.DrawFn, unlimited_applied: bool = False) -> dict[str, RegionQuota]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), min_size=1, max_size=6, unique=True))
    applied = st.none() | st.integers(0, 400)
    if unlimited_applied:
        applied = applied | st.just(-1)
    recent = st.sampled_from([0.0, 0.0, 1.0, 3.5]) | st.floats(0, 1e6) | st.floats(-10, 0)
    return {n: RegionQuota(draw(st.integers(0, 200)), draw(applied), draw(recent), draw(st.booleans()))
            for n in names}


hards = st.integers(0, 1500)
floors = st.integers(0, 20)
fractions = st.sampled_from([0.0, 0.05, 0.1, 0.33, 1.0])


def current(q: RegionQuota) -> int:
    return q.applied if q.applied is not None else q.usage


def headroom(hard: int, regions: dict[str, RegionQuota]) -> int:
    return hard - sum(current(q) if q.stale else q.usage for q in regions.values())


@settings(max_examples=400, deadline=None)
@given(hards, quota_regions(), floors, fractions)
def test_never_more_than_hard_limit_in_any_order_of_applying(
    hard: int, regions: dict[str, RegionQuota], floor: int, fraction: float
) -> None:
    out = allocate(hard, regions, floor=floor, floor_fraction=fraction)
    worst = sum(max(current(q), out[n].now) for n, q in regions.items())
    in_force = sum(current(q) for q in regions.values())
    # Raisings only use what is free; if the limits in force already exceed H (H was cut), nothing gets worse.
    assert worst <= max(hard, in_force)
    if headroom(hard, regions) >= 0 and in_force <= hard:
        assert worst <= hard
    # Once applied, the targets themselves fit.
    if headroom(hard, regions) >= 0:
        assert sum(a.target for a in out.values()) <= hard


@settings(max_examples=400, deadline=None)
@given(hards, quota_regions(unlimited_applied=True), floors, fractions)
def test_targets_usage_stale_and_steps(
    hard: int, regions: dict[str, RegionQuota], floor: int, fraction: float
) -> None:
    out = allocate(hard, regions, floor=floor, floor_fraction=fraction)
    assert sorted(out) == sorted(regions)
    for n, q in regions.items():
        a = out[n]
        if q.stale:
            assert a.target == a.now == current(q)
            continue
        assert a.target >= q.usage
        if current(q) == -1 or a.target <= current(q):
            assert a.now == a.target, "lowerings happen at once"
        else:
            assert current(q) <= a.now <= a.target
    live = [q for q in regions.values() if not q.stale]
    stale_unlimited = any(q.stale and current(q) == -1 for q in regions.values())
    if live and not stale_unlimited and headroom(hard, regions) >= 0:
        assert sum(a.target for a in out.values()) == hard, "all headroom given out"


@settings(max_examples=200, deadline=None)
@given(hards, quota_regions(unlimited_applied=True), floors, fractions)
def test_deterministic_and_independent_of_order(
    hard: int, regions: dict[str, RegionQuota], floor: int, fraction: float
) -> None:
    out = allocate(hard, regions, floor=floor, floor_fraction=fraction)
    assert allocate(hard, regions, floor=floor, floor_fraction=fraction) == out
    reversed_regions = dict(reversed(list(regions.items())))
    assert allocate(hard, reversed_regions, floor=floor, floor_fraction=fraction) == out


@settings(max_examples=300, deadline=None)
@given(hards, quota_regions(unlimited_applied=True), floors, fractions)
def test_confirming_now_reaches_the_targets_in_two_rounds(
    hard: int, regions: dict[str, RegionQuota], floor: int, fraction: float
) -> None:
    if headroom(hard, regions) < 0 or any(q.stale and current(q) == -1 for q in regions.values()):
        return  # over the hard limit: targets = usage may not fit, nothing to converge to
    first = allocate(hard, regions, floor=floor, floor_fraction=fraction)
    second = allocate(hard, confirmed(regions, first), floor=floor, floor_fraction=fraction)
    assert all(a.now == a.target for a in second.values()), second
    assert {n: a.target for n, a in second.items()} == {n: a.target for n, a in first.items()}
    assert sum(a.now for a in second.values()) <= hard
    third = allocate(hard, confirmed(regions, second), floor=floor, floor_fraction=fraction)
    assert third == second


@settings(max_examples=200, deadline=None)
@given(st.integers(-5, -1), quota_regions(unlimited_applied=True))
def test_no_global_limit_gives_every_reachable_region_unlimited(hard: int, regions: dict[str, RegionQuota]) -> None:
    out = allocate(hard, regions)
    for n, q in regions.items():
        assert (out[n].target, out[n].now) == ((current(q),) * 2 if q.stale else (-1, -1))


@given(st.integers(-1, 100), st.integers(0, 100), st.integers(0, 100))
def test_soft_crossed_is_upward_only(soft: int, before: int, now: int) -> None:
    if soft_crossed(soft, before, now):
        assert before < soft <= now
        assert not soft_crossed(soft, now, before)
