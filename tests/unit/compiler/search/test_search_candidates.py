"""Candidate generation: clustering by log-sensitivity, monotone bit assignments, all-min, spread."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from adatsq.compiler.search import (
    Candidate,
    cluster_by_sensitivity,
    generate_candidates,
    weighted_average_bits,
)


def _random_scores(rng: random.Random, n: int) -> list[float]:
    # log-normal sensitivities with some exact repeats and zeros
    scores = [math.exp(rng.gauss(0.0, 3.0)) for _ in range(n)]
    for i in rng.sample(range(n), k=n // 4):
        scores[i] = scores[rng.randrange(n)]
    if n > 3:
        scores[rng.randrange(n)] = 0.0
    return scores


def _sse(xs: list[float], labels: list[int]) -> float:
    total = 0.0
    for c in set(labels):
        members = [x for x, lab in zip(xs, labels) if lab == c]
        mean = sum(members) / len(members)
        total += sum((x - mean) ** 2 for x in members)
    return total


def test_average_bits_weights_by_unit_size() -> None:
    cand = Candidate((3, 8))
    assert cand.average_bits((3, 1)) == pytest.approx((3 * 3 + 8 * 1) / 4)
    assert cand.average_bits((1, 1)) == pytest.approx(5.5)
    assert weighted_average_bits((4, 4, 4), (7, 1, 2)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="lengths must match"):
        cand.average_bits((1, 1, 1))
    with pytest.raises(ValueError, match=">= 1"):
        cand.average_bits((0, 1))


@pytest.mark.parametrize("seed", range(6))
def test_candidates_are_monotone_in_sensitivity(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 30)
    scores = _random_scores(rng, n)
    sizes = [rng.randint(1, 6) for _ in range(n)]
    cands = generate_candidates(scores, sizes, m=8)
    for cand in cands:
        for u, v in itertools.permutations(range(n), 2):
            if scores[u] > scores[v]:
                assert cand.bits[u] >= cand.bits[v], (scores[u], scores[v], cand.bits)
            if scores[u] == scores[v]:
                assert cand.bits[u] == cand.bits[v]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 10, 20])
def test_all_min_first_at_most_m_distinct_sorted(seed: int, m: int) -> None:
    rng = random.Random(100 + seed)
    n = rng.randint(3, 25)
    scores = _random_scores(rng, n)
    sizes = [rng.randint(1, 4) for _ in range(n)]
    cands = generate_candidates(scores, sizes, m=m)
    assert 1 <= len(cands) <= m
    assert cands[0].bits == (3,) * n
    assert len({c.bits for c in cands}) == len(cands)
    avgs = [c.average_bits(sizes) for c in cands]
    assert avgs == sorted(avgs)
    assert all(set(c.bits) <= {3, 4, 8} for c in cands)
    k = len(set(cluster_by_sensitivity(scores, 3)))
    n_assignments = math.comb(3 + k - 1, k)
    assert len(cands) == min(m, n_assignments)


def test_spread_keeps_extremes_and_is_even() -> None:
    scores = [0.01, 0.02, 1.0, 1.1, 100.0, 120.0]
    sizes = [1] * 6
    full = generate_candidates(scores, sizes, m=100)
    assert len(full) == 10  # C(3 + 3 - 1, 3) monotone assignments over 3 clusters
    four = generate_candidates(scores, sizes, m=4)
    avgs = [c.average_bits(sizes) for c in four]
    assert avgs[0] == pytest.approx(3.0)
    assert avgs[-1] == pytest.approx(8.0)
    assert {c.bits for c in four} <= {c.bits for c in full}
    # each interior pick is the nearest available to the even grid 3, 3+5/3, 3+10/3, 8
    all_avgs = sorted(c.average_bits(sizes) for c in full)
    for j, a in enumerate(avgs[1:-1], start=1):
        target = 3.0 + 5.0 * j / 3
        assert abs(a - target) == pytest.approx(min(abs(x - target) for x in all_avgs))


def test_deterministic_and_permutation_equivariant() -> None:
    rng = random.Random(7)
    n = 17
    scores = _random_scores(rng, n)
    sizes = [rng.randint(1, 5) for _ in range(n)]
    a = generate_candidates(scores, sizes, m=6)
    b = generate_candidates(list(scores), list(sizes), m=6)
    assert a == b
    perm = list(range(n))
    rng.shuffle(perm)
    c = generate_candidates([scores[p] for p in perm], [sizes[p] for p in perm], m=6)
    assert [tuple(x.bits[p] for p in perm) for x in a] == [x.bits for x in c]


@pytest.mark.parametrize(
    ("scores", "sizes"),
    [
        ([2.5], [3]),
        ([1.0, 1.0, 1.0, 1.0], [1, 2, 3, 4]),
        ([0.0, 0.0, 0.0], [1, 1, 1]),
        ([0.0, 1e-30, 1e30], [1, 1, 1]),
        ([0.0, 5.0], [2, 1]),
    ],
)
def test_degenerate_inputs(scores: list[float], sizes: list[int]) -> None:
    cands = generate_candidates(scores, sizes, m=8)
    assert cands[0].bits == (3,) * len(scores)
    for c in cands:
        assert math.isfinite(c.average_bits(sizes))
    if len(set(scores)) == 1:
        assert [c.bits for c in cands] == [(b,) * len(scores) for b in (3, 4, 8)]


def test_zero_scores_sit_in_least_sensitive_cluster() -> None:
    labels = cluster_by_sensitivity([0.0, 0.0, 1.0, 10.0, 1000.0], 3)
    assert labels[0] == labels[1] == 0
    assert labels == sorted(labels)


def test_one_cluster_gives_uniform_candidates() -> None:
    cands = generate_candidates([1.0, 2.0, 3.0], [1, 1, 1], m=8, n_clusters=1)
    assert [c.bits for c in cands] == [(3, 3, 3), (4, 4, 4), (8, 8, 8)]


def test_custom_bit_choices_are_sorted_and_deduplicated() -> None:
    cands = generate_candidates([1.0, 100.0], [1, 1], m=8, bit_choices=(8, 4, 4))
    assert [c.bits for c in cands] == [(4, 4), (4, 8), (8, 8)]


@pytest.mark.parametrize("seed", range(8))
def test_clustering_is_optimal_1d_kmeans(seed: int) -> None:
    rng = random.Random(200 + seed)
    n = rng.randint(1, 9)
    scores = [math.exp(rng.gauss(0.0, 2.0)) for _ in range(n)]
    for k in (1, 2, 3, 4):
        labels = cluster_by_sensitivity(scores, k)
        xs = [math.log(s) for s in scores]
        assert len(set(labels)) == min(k, len(set(scores)))
        order = sorted(range(n), key=lambda i: xs[i])
        assert [labels[i] for i in order] == sorted(labels[i] for i in order)  # contiguous, ordered
        # brute force over every contiguous split of the sorted values into min(k, n) clusters
        sorted_xs = [xs[i] for i in order]
        kk = min(k, n)
        best = math.inf
        for cuts in itertools.combinations(range(1, n), kk - 1):
            lab = []
            for c, (lo, hi) in enumerate(zip((0, *cuts), (*cuts, n))):
                lab += [c] * (hi - lo)
            best = min(best, _sse(sorted_xs, lab))
        assert _sse(xs, labels) == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": [1.0, -1.0], "unit_sizes": [1, 1]}, "finite and >= 0"),
        ({"scores": [1.0, float("nan")], "unit_sizes": [1, 1]}, "finite and >= 0"),
        ({"scores": [1.0, float("inf")], "unit_sizes": [1, 1]}, "finite and >= 0"),
        ({"scores": [1.0], "unit_sizes": [1, 1]}, "one score per unit"),
        ({"scores": [], "unit_sizes": []}, "at least one"),
        ({"scores": [1.0], "unit_sizes": [1], "m": 0}, "m "),
        ({"scores": [1.0], "unit_sizes": [1], "bit_choices": ()}, "bit_choices"),
        ({"scores": [1.0], "unit_sizes": [1], "n_clusters": 0}, "n_clusters"),
    ],
)
def test_invalid_inputs_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_candidates(**kwargs)
