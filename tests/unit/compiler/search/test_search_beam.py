"""Pareto beam search: exactness against brute force, beam-width capping, engine cap, determinism."""

from __future__ import annotations

import itertools
import random

import pytest

from adatsq.compiler.search import (
    Candidate,
    Path,
    SearchError,
    pareto_beam_search,
    pareto_front,
)

Row = tuple[tuple[int, ...], float, float]


def _instance(
    seed: int, steps: int = 4, integer_losses: bool = False
) -> list[list[tuple[Candidate, float, float]]]:
    rng = random.Random(seed)
    out = []
    for _t in range(steps):
        n = rng.randint(3, 4)
        step = []
        for j in range(n):
            bits = rng.choice([3.0, 3.25, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0])
            loss = float(rng.randint(0, 4)) if integer_losses else rng.random() * 10
            step.append((Candidate((j,)), bits, loss))
        out.append(step)
    return out


def _brute_force_front(inst: list[list[tuple[Candidate, float, float]]]) -> list[Row]:
    """All complete paths, summed in step order, then an O(n²) dominance filter (equal points: the
    lexicographically smallest choice tuple stays)."""
    rows: list[Row] = []
    for choices in itertools.product(*[range(len(s)) for s in inst]):
        b = 0.0
        lo = 0.0
        for t, j in enumerate(choices):
            b += inst[t][j][1]
            lo += inst[t][j][2]
        rows.append((choices, b, lo))
    front = []
    for c, b, lo in rows:
        dominated = any(
            (b2 <= b and l2 <= lo and (b2 < b or l2 < lo)) or (b2 == b and l2 == lo and c2 < c)
            for c2, b2, l2 in rows
        )
        if not dominated:
            front.append((c, b, lo))
    return sorted(front, key=lambda r: (r[1], r[2], r[0]))


def _rows(paths: list[Path]) -> list[Row]:
    return [(p.choices, p.cum_bits, p.cum_loss) for p in paths]


def test_pareto_front_rules() -> None:
    pts = [(3.0, 5.0), (4.0, 4.0), (4.0, 6.0), (5.0, 4.0), (2.0, 9.0), (4.0, 4.0), (6.0, 1.0)]
    # (4,6) dominated by (4,4); (5,4) dominated by (4,4); the second (4,4) is a duplicate of index 1
    assert pareto_front(pts) == [4, 0, 1, 6]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)]) == [0]
    with pytest.raises(ValueError, match="not finite"):
        pareto_front([(1.0, float("nan"))])


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("integer_losses", [False, True])
def test_wide_beam_equals_brute_force_front(seed: int, integer_losses: bool) -> None:
    inst = _instance(seed, integer_losses=integer_losses)
    expected = _brute_force_front(inst)
    for keep in (True, False):
        got = pareto_beam_search(inst, beam_width=10_000, keep_min_bits=keep)
        assert _rows(got) == expected
        assert {(p.cum_bits, p.cum_loss) for p in got} == {(b, lo) for _, b, lo in expected}


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_small_beam_is_non_dominated_and_capped(seed: int, width: int) -> None:
    inst = _instance(seed, steps=5)
    got = pareto_beam_search(inst, beam_width=width)
    assert 1 <= len(got) <= width
    pts = [(p.cum_bits, p.cum_loss) for p in got]
    assert sorted(pareto_front(pts)) == list(range(len(got)))  # returned set is its own front
    # keep_min_bits: the globally smallest cum_bits schedule is always among the survivors
    assert min(p.cum_bits for p in got) == _brute_force_front(inst)[0][1]
    for p in got:
        assert len(p.choices) == len(inst)
        assert p.cum_bits == pytest.approx(sum(inst[t][j][1] for t, j in enumerate(p.choices)))
        assert p.cum_loss == pytest.approx(sum(inst[t][j][2] for t, j in enumerate(p.choices)))


def _one_step(points: list[tuple[float, float]]) -> list[list[tuple[Candidate, float, float]]]:
    return [[(Candidate((j,)), b, lo) for j, (b, lo) in enumerate(points)]]


def test_truncation_keeps_nearest_to_normalised_origin_and_forces_min_bits() -> None:
    # normalised over the front (bits span 5, loss span 10): distances² 1, 0.08, 0.1825, 1
    inst = _one_step([(3.0, 10.0), (4.0, 2.0), (5.0, 1.5), (8.0, 0.0)])
    free = pareto_beam_search(inst, beam_width=2, keep_min_bits=False, keep_min_loss=False)
    assert [p.choices for p in free] == [(1,), (2,)]
    forced = pareto_beam_search(inst, beam_width=2, keep_min_bits=True, keep_min_loss=False)
    # the rule: the min-bits path takes the last slot; the beam never exceeds beam_width
    assert [p.choices for p in forced] == [(0,), (1,)]
    only = pareto_beam_search(inst, beam_width=1, keep_min_bits=True)
    assert [p.choices for p in only] == [(0,)]  # one slot: the min-bits path before the min-loss one
    assert [
        p.choices for p in pareto_beam_search(inst, beam_width=1, keep_min_bits=False, keep_min_loss=False)
    ] == [(1,)]
    # nothing to truncate: all four are returned, sorted by bits
    assert [p.choices for p in pareto_beam_search(inst, beam_width=4)] == [(0,), (1,), (2,), (3,)]


def test_truncation_keeps_both_ends_of_the_front() -> None:
    """keep_min_loss (the default): the lowest-loss path survives beside the min-bits one and the nearest."""
    inst = _one_step([(3.0, 10.0), (4.0, 2.0), (5.0, 1.5), (8.0, 0.0)])
    assert [p.choices for p in pareto_beam_search(inst, beam_width=2)] == [(0,), (3,)]
    assert [p.choices for p in pareto_beam_search(inst, beam_width=3)] == [(0,), (1,), (3,)]
    assert [p.choices for p in pareto_beam_search(inst, beam_width=2, keep_min_bits=False)] == [(1,), (3,)]
    assert [p.choices for p in pareto_beam_search(inst, beam_width=1, keep_min_bits=False)] == [(3,)]


def test_a_generous_budget_is_reached() -> None:
    """Four steps of 3/3.5/4/8-bit candidates, a budget of 4 bits per step, a beam of 2: the distance rule
    alone keeps the knee and ends far under the budget; with the min-loss path kept, the beam reaches it."""
    step = [(Candidate((3,)), 3.0, 1.0), (Candidate((4,)), 3.5, 0.6), (Candidate((5,)), 4.0, 0.4)]
    step.append((Candidate((8,)), 8.0, 0.3))
    inst = [step] * 4
    budget = 4.0 * 4
    knee = pareto_beam_search(inst, beam_width=2, budget=budget, keep_min_loss=False)
    both = pareto_beam_search(inst, beam_width=2, budget=budget)
    most = max(p.cum_bits for p in both)
    assert max(p.cum_bits for p in knee) < most <= budget
    assert most == budget  # e.g. one 8-bit step and three at 3, or four at 4: the whole budget
    assert min(p.cum_loss for p in both) < min(p.cum_loss for p in knee)


def _engine_instance(seed: int, steps: int = 5) -> list[list[tuple[Candidate, float, float]]]:
    rng = random.Random(1000 + seed)
    pool = [(4, 3, 3), (4, 4, 3), (8, 4, 3), (8, 8, 4), (8, 8, 8)]
    out = []
    for _t in range(steps):
        step = [(Candidate((3, 3, 3)), 3.0, 5.0 + rng.random())]
        for vec in rng.sample(pool, k=3):
            step.append((Candidate(vec), sum(vec) / 3, rng.random() * 4))
        rng.shuffle(step)
        out.append(step)
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_engines", [1, 2, 3])
def test_max_engines_caps_distinct_configs(seed: int, max_engines: int) -> None:
    inst = _engine_instance(seed)
    got = pareto_beam_search(inst, beam_width=4, max_engines=max_engines)
    assert 1 <= len(got) <= 4
    for p in got:
        vectors = [inst[t][j][0].bits for t, j in enumerate(p.choices)]
        assert p.configs == tuple(dict.fromkeys(vectors))  # distinct, in order of first use
        assert len(p.configs) <= max_engines
    all_min = tuple(next(j for j, c in enumerate(step) if c[0].bits == (3, 3, 3)) for step in inst)
    assert any(p.choices == all_min for p in got)  # the one-engine all-minimum schedule survives
    if max_engines == 1:
        assert all(len(set(p.configs)) == 1 for p in got)


def test_max_engines_without_feasible_expansion_raises() -> None:
    inst = [[(Candidate((3,)), 3.0, 1.0)], [(Candidate((4,)), 4.0, 1.0)]]
    with pytest.raises(SearchError, match="max_engines=1"):
        pareto_beam_search(inst, beam_width=4, max_engines=1)
    assert len(pareto_beam_search(inst, beam_width=4, max_engines=2)[0].configs) == 2


@pytest.mark.parametrize("seed", range(5))
def test_deterministic(seed: int) -> None:
    inst = _instance(seed, steps=6, integer_losses=seed % 2 == 0)
    a = pareto_beam_search(inst, beam_width=3, max_engines=None)
    b = pareto_beam_search([list(s) for s in inst], beam_width=3, max_engines=None)
    assert a == b
    e = _engine_instance(seed)
    assert pareto_beam_search(e, beam_width=3, max_engines=2) == pareto_beam_search(
        e, beam_width=3, max_engines=2
    )


def test_path_average_bits() -> None:
    p = Path(choices=(0, 1), cum_bits=7.0, cum_loss=1.0, configs=((3,), (4,)))
    assert p.average_bits() == pytest.approx(3.5)
    assert p.average_bits(4) == pytest.approx(1.75)
    with pytest.raises(ValueError, match="steps"):
        Path((), 0.0, 0.0, ()).average_bits()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([], 2), "at least one"),
        (([[]], 2), "no candidates"),
        (([[(Candidate((3,)), 3.0, 1.0)]], 0), "beam_width"),
        (([[(Candidate((3,)), 3.0, float("nan"))]], 2), "finite"),
    ],
)
def test_invalid_inputs_raise(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pareto_beam_search(*args)
    with pytest.raises(ValueError, match="max_engines"):
        pareto_beam_search([[(Candidate((3,)), 3.0, 1.0)]], 2, max_engines=0)
