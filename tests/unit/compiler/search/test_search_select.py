"""Final selection within the budget, end to end from synthetic Fisher scores and losses."""

from __future__ import annotations

import math
import random

import pytest

from adatsq.compiler.search import (
    Path,
    SearchError,
    cumulative_loss_metric,
    generate_candidates,
    pareto_beam_search,
    select_path,
)


def _synthetic_search(seed: int, steps: int = 6, m: int = 8, max_engines: int | None = None) -> list[Path]:
    rng = random.Random(seed)
    n_units = 12
    sizes = [rng.randint(1, 4) for _ in range(n_units)]
    step_candidates = []
    for t in range(steps):
        scores = [math.exp(rng.gauss(t / steps, 2.0)) for _ in range(n_units)]
        cands = generate_candidates(scores, sizes, m=m)
        rows = []
        for c in cands:
            # loss falls with bits, weighted by sensitivity; plus noise
            loss = sum(s * 4.0 ** (-b) for s, b in zip(scores, c.bits)) * (1 + 0.1 * rng.random())
            rows.append((c, c.average_bits(sizes), loss))
        step_candidates.append(rows)
    return pareto_beam_search(step_candidates, beam_width=m, max_engines=max_engines)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_engines", [None, 1, 2])
def test_every_target_from_min_is_feasible_and_respected(seed: int, max_engines: int | None) -> None:
    steps = 6
    paths = _synthetic_search(seed, steps=steps, max_engines=max_engines)
    previous = math.inf
    for i in range(51):
        target = 3.0 + 0.1 * i
        best, evaluated = select_path(paths, steps, target, cumulative_loss_metric)
        assert best.average_bits(steps) <= target + 1e-9
        assert evaluated
        assert all(p.average_bits(steps) <= target + 1e-9 for p, _ in evaluated)
        assert best.cum_loss == min(v for _, v in evaluated)
        assert best.cum_loss <= previous  # a larger budget never selects a worse path
        previous = best.cum_loss
    best3, _ = select_path(paths, steps, 3.0, cumulative_loss_metric)
    assert best3.average_bits(steps) == 3.0
    with pytest.raises(SearchError, match=r"smallest achievable average is 3 bits"):
        select_path(paths, steps, 2.99, cumulative_loss_metric)


def _p(choices: tuple[int, ...], bits: float, loss: float) -> Path:
    return Path(choices=choices, cum_bits=bits, cum_loss=loss, configs=())


def test_ties_prefer_fewer_bits_then_lower_loss() -> None:
    paths = [_p((0,), 8.0, 1.0), _p((1,), 4.0, 3.0), _p((2,), 4.0, 2.0), _p((3,), 3.0, 9.0)]
    best, evaluated = select_path(paths, 1, 8.0, lambda p: 0.0)
    assert best.choices == (3,)
    best, _ = select_path(paths[:3], 1, 8.0, lambda p: 0.0)
    assert best.choices == (2,)
    # evaluation order is (cum_bits, cum_loss, choices), whatever the input order
    assert [p.choices for p, _ in evaluated] == [(3,), (2,), (1,), (0,)]


def test_metric_called_once_per_feasible_path_and_best_by_metric() -> None:
    paths = [_p((0,), 8.0, 1.0), _p((1,), 4.0, 3.0), _p((2,), 3.0, 9.0)]
    calls: list[tuple[int, ...]] = []

    def metric(p: Path) -> float:
        calls.append(p.choices)
        return {(0,): 0.5, (1,): 0.1, (2,): 0.7}[p.choices]

    best, evaluated = select_path(paths, 1, 4.0 - 1e-12, metric)
    assert best.choices == (1,)
    assert calls == [(2,), (1,)]
    assert evaluated == [(paths[2], 0.7), (paths[1], 0.1)]


def test_errors() -> None:
    paths = [_p((0,), 7.0, 1.0)]
    with pytest.raises(SearchError, match="no paths"):
        select_path([], 2, 4.0, cumulative_loss_metric)
    with pytest.raises(SearchError, match=r"target of 3\.4 .* 3\.5 bits"):
        select_path(paths, 2, 3.4, cumulative_loss_metric)
    with pytest.raises(SearchError, match="finite"):
        select_path(paths, 2, 4.0, lambda p: float("nan"))
    with pytest.raises(ValueError, match="steps"):
        select_path(paths, 0, 4.0, cumulative_loss_metric)
    assert issubclass(SearchError, ValueError)
