"""The moment engine against exhaustive enumeration (Rademacher) and Monte-Carlo (Gaussian, uniform)."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs import moments
from proofs.symbols import d, even_moment, mu4, r, sigma2
from proofs.vectors import BasisVector, Coordinate, Vector, evaluate_vectors, sum_over_index

P, Q, X = Vector("p"), Vector("q"), Vector("x")
J = sp.Symbol("j", integer=True)


def all_sign_matrices(rank, dim):
    """Every r x d matrix with entries +-1, shape (2**(r*d), r, d), as int64."""
    patterns = np.array(list(itertools.product((-1, 1), repeat=rank * dim)), dtype=np.int64)
    return patterns.reshape(-1, rank, dim)


def exact_mean(values):
    """Exact mean of an int64 array as a Fraction."""
    return Fraction(int(values.sum()), len(values))


def rademacher_value(expr, vectors, rank):
    """Evaluate a derived expression for +-1 entries (sigma2 = mu4 = mu6 = 1)."""
    value = evaluate_vectors(expr, vectors)
    unit_moments = {sigma2: 1, mu4: 1, even_moment(6): 1, r: rank}
    return Fraction(str(sp.nsimplify(value.xreplace(unit_moments))))


@st.composite
def shapes_and_vectors(draw, count=3):
    rank = draw(st.integers(1, 3))
    dim = draw(st.integers(1, 3 if rank < 3 else 2))
    vectors = [draw(st.lists(st.integers(-3, 3), min_size=dim, max_size=dim)) for _ in range(count)]
    return rank, dim, vectors


@given(shapes_and_vectors())
@settings(max_examples=25)
def test_gram_moments_match_enumeration(case):
    rank, dim, (p, q, x) = case
    A = all_sign_matrices(rank, dim)  # (patterns, r, d)
    Ap, Aq, Ax = A @ np.array(p), A @ np.array(q), A @ np.array(x)  # (patterns, r)
    S_px = (Ap * Ax).sum(axis=1)
    S_qx = (Aq * Ax).sum(axis=1)
    vectors = {P: p, Q: q, X: x}

    first = moments.expectation(moments.gram(P, X))
    second = moments.expectation(moments.gram(P, X) * moments.gram(Q, X))
    third = moments.expectation(moments.gram(P, X) ** 3)

    assert rademacher_value(first, vectors, rank) == exact_mean(S_px)
    assert rademacher_value(second, vectors, rank) == exact_mean(S_px * S_qx)
    assert rademacher_value(third, vectors, rank) == exact_mean(S_px**3)


@given(shapes_and_vectors(count=2))
@settings(max_examples=25)
def test_gram_vector_moments_match_enumeration(case):
    rank, dim, (p, q) = case
    A = all_sign_matrices(rank, dim)
    AtAp = np.einsum("nkj,nk->nj", A, A @ np.array(p))  # (patterns, d): A^T A p
    AtAq = np.einsum("nkj,nk->nj", A, A @ np.array(q))
    basis = BasisVector(J)

    coordinate = moments.expectation(moments.gram(basis, P) ** 2)
    for j in range(dim):
        at_j = coordinate.xreplace({Coordinate(P, J): sp.Integer(p[j])})
        assert rademacher_value(at_j, {P: p}, rank) == exact_mean(AtAp[:, j] ** 2)

    inner_product = sum_over_index(moments.expectation(moments.gram(basis, P) * moments.gram(basis, Q)), J)
    assert rademacher_value(inner_product, {P: p, Q: q}, rank) == exact_mean((AtAp * AtAq).sum(axis=1))


def monte_carlo_check(samples, formula_value, label):
    """Assert the sample mean is within 5 standard errors of the formula."""
    mean = samples.mean()
    standard_error = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(mean - formula_value) < 5 * standard_error, (
        f"{label}: Monte-Carlo mean {mean:.6g} +- {standard_error:.2g} vs formula {formula_value:.6g}"
    )


def sample_entries(name, size, variance, rng):
    if name == "gaussian":
        return rng.normal(0.0, np.sqrt(variance), size)
    half_width = np.sqrt(3 * variance)
    return rng.uniform(-half_width, half_width, size)


def float_value(expr, vectors, rank, name, variance):
    moments_of_name = {k: v.subs(sigma2, variance) for k, v in moments.distribution_substitutions(name).items()}
    value = evaluate_vectors(expr, vectors).xreplace({r: rank, sigma2: variance}).xreplace(moments_of_name)
    return float(value)


@pytest.mark.parametrize("name", ["gaussian", "uniform"])
def test_gram_moments_match_monte_carlo(name):
    rng = np.random.default_rng(1234)
    rank, dim, samples, variance = 3, 4, 200_000, 0.7
    p, q, x = rng.normal(size=(3, dim))
    vectors = {P: p, Q: q, X: x}
    A = sample_entries(name, (samples, rank, dim), variance, rng)  # (samples, r, d)
    Ap, Aq, Ax = A @ p, A @ q, A @ x  # (samples, r)
    S_px, S_qx = (Ap * Ax).sum(axis=1), (Aq * Ax).sum(axis=1)
    AtAp = np.einsum("nkj,nk->nj", A, Ap)  # (samples, d)

    cases = {
        "E[S(p,x) S(q,x)]": (moments.expectation(moments.gram(P, X) * moments.gram(Q, X)), S_px * S_qx),
        "E[S(p,x)^3]": (moments.expectation(moments.gram(P, X) ** 3), S_px**3),
        "E|A^T A p|^2": (
            sum_over_index(moments.expectation(moments.gram(BasisVector(J), P) ** 2), J),
            (AtAp**2).sum(axis=1),
        ),
    }
    for label, (expr, values) in cases.items():
        monte_carlo_check(values, float_value(expr, vectors, rank, name, variance), f"{name} {label}")


@pytest.mark.parametrize("name", ["gaussian", "uniform"])
def test_distribution_fourth_moment_matches_samples(name):
    rng = np.random.default_rng(7)
    variance = 0.3
    z = sample_entries(name, 1_000_000, variance, rng)
    expected = float(moments.distribution_moment(name, 4).subs(sigma2, variance))
    monte_carlo_check(z**4, expected, f"{name} mu4")


def test_cumulants_of_rademacher_match_known_values():
    rademacher = moments.distribution_substitutions("rademacher")
    assert sp.simplify(moments.cumulant(4).subs(rademacher)) == -2 * sigma2**2
    assert sp.simplify(moments.cumulant(6).subs(rademacher)) == 16 * sigma2**3
    assert moments.cumulant(3) == 0


def test_even_block_partitions_count_matches_formula():
    # Pairings of 2m items: (2m-1)!!; all even-block partitions of 4 items: 3 pairings + 1 block.
    assert len(list(moments.even_block_partitions(list(range(6))))) == 15 + 15 + 1
    assert len(list(moments.even_block_partitions(list(range(4))))) == 4
    assert list(moments.even_block_partitions([])) == [[]]


def test_sum_over_index_rejects_single_coordinate():
    with pytest.raises(ValueError, match="single coordinate"):
        sum_over_index(Coordinate(P, J) * d, J)


def test_unknown_distribution_is_rejected():
    with pytest.raises(ValueError, match="unknown distribution 'laplace'"):
        moments.distribution_moment("laplace", 4)
