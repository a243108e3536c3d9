"""Moment engine for a random matrix ``A`` with iid symmetric entries.

Each row ``a_k`` of the ``r x d`` matrix ``A`` has iid entries with mean 0, variance
``sigma2``, zero odd moments and even moments ``mu4``, ``mu6``, ... Two exact rules give
every moment used by the derivations:

1. One row (moment-cumulant formula). ``E[prod_i (a.p_i)]`` is the sum over the set
   partitions of the factors of ``prod_blocks kappa_|block| * sum_j prod_{i in block} p_i[j]``.
   Odd cumulants vanish, so only partitions into even blocks contribute. A block of two
   gives ``sigma2 (p.q)``, and a block of four gives ``kappa4 sum_j p_j q_j s_j t_j``
   with ``kappa4 = mu4 - 3 sigma2**2``.
2. Many rows. A row sum ``sum_k g(a_k)`` adds one function of each of the ``r`` iid rows.
   ``E[prod_i sum_k g_i(a_k)]`` is the sum over the set partitions of the factors into
   groups that share a row. A partition with ``m`` groups has ``r (r-1) ... (r-m+1)``
   row assignments, and distinct rows are independent, so each group contributes its
   one-row moment.

The random scalar ``p^T A^T A q = sum_k (a_k.p)(a_k.q)`` is the row sum
``RowSum(p, q)`` (see :func:`gram`). Results are polynomials in ``r``, ``sigma2``,
``mu4``, ... and coordinate sums of the vectors, proved for every finite ``r`` and ``d``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence

import sympy as sp
from sympy.utilities.iterables import multiset_partitions

from proofs.symbols import even_moment, r, sigma2
from proofs.vectors import Vector, coordinate_sum, linear_terms

DISTRIBUTIONS = ("gaussian", "rademacher", "uniform")
"""Names of the initialisations with closed-form moments, all parametrised by ``sigma2``."""


@functools.lru_cache(maxsize=None)
def cumulant(order: int) -> sp.Expr:
    """Return the cumulant ``kappa_order`` of one entry in terms of its moments.

    Uses the recursion ``kappa_n = mu_n - sum_{m=1}^{n-1} C(n-1, m-1) kappa_m mu_{n-m}``
    with all odd moments zero, so ``kappa4 = mu4 - 3 sigma2**2`` and
    ``kappa6 = mu6 - 15 mu4 sigma2 + 30 sigma2**3``.
    """
    if order < 1:
        raise ValueError(f"cumulant order must be >= 1, got {order!r}")
    if order % 2:
        return sp.S.Zero
    total = even_moment(order)
    for m in range(2, order - 1, 2):
        total -= sp.binomial(order - 1, m - 1) * cumulant(m) * even_moment(order - m)
    return sp.expand(total)


@functools.lru_cache(maxsize=None)
def distribution_moment(name: str, order: int) -> sp.Expr:
    """Return the ``order``-th moment of a named entry distribution with variance ``sigma2``.

    The moments are integrated from the densities, not looked up:

    * ``"gaussian"``: N(0, sigma2), so ``mu4 = 3 sigma2**2``.
    * ``"rademacher"``: ``+-sqrt(sigma2)`` with probability 1/2 each, so ``mu4 = sigma2**2``.
    * ``"uniform"``: U(-a, a) with ``a**2 = 3 sigma2``, so ``mu4 = 9 sigma2**2 / 5``. HF PEFT's
      default ``kaiming_uniform_(a=sqrt(5))`` on ``A`` is U(+-1/sqrt(fan_in)), this case with
      ``sigma2 = 1/(3 fan_in)``.
    """
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r}; expected one of {DISTRIBUTIONS}")
    if order < 0:
        raise ValueError(f"moment order must be >= 0, got {order!r}")

    z = sp.Symbol("z", real=True)
    if name == "gaussian":
        density = sp.exp(-(z**2) / (2 * sigma2)) / sp.sqrt(2 * sp.pi * sigma2)
        moment = sp.integrate(z**order * density, (z, -sp.oo, sp.oo))
    elif name == "rademacher":
        scale = sp.sqrt(sigma2)
        moment = (scale**order + (-scale) ** order) / 2
    else:
        half_width = sp.sqrt(3 * sigma2)
        moment = sp.integrate(z**order / (2 * half_width), (z, -half_width, half_width))
    return sp.simplify(moment)


def distribution_substitutions(name: str, max_order: int = 8) -> dict[sp.Symbol, sp.Expr]:
    """Return ``{mu4: ..., mu6: ..., ...}`` for a named distribution, up to ``max_order``."""
    return {even_moment(k): distribution_moment(name, k) for k in range(4, max_order + 1, 2)}


def even_block_partitions(items: Sequence) -> Iterator[list[list]]:
    """Yield the set partitions of ``items`` whose blocks all have even size."""
    if not items:
        yield []
        return
    first, rest = items[0], list(items[1:])
    for size in range(1, len(rest) + 1, 2):
        for chosen in itertools.combinations(range(len(rest)), size):
            block = [first] + [rest[i] for i in chosen]
            remaining = [x for i, x in enumerate(rest) if i not in chosen]
            for partition in even_block_partitions(remaining):
                yield [block] + partition


@functools.lru_cache(maxsize=None)
def _atomic_linear_form_moment(vectors: tuple[Vector, ...]) -> sp.Expr:
    total = sp.S.Zero
    for partition in even_block_partitions(list(vectors)):
        term = sp.S.One
        for block in partition:
            term *= cumulant(len(block)) * coordinate_sum(block)
        total += term
    return sp.expand(total)


def linear_form_moment(vectors: Sequence[sp.Expr]) -> sp.Expr:
    """Return ``E[prod_i (a.p_i)]`` for one row ``a`` and vectors ``p_i``.

    Each ``p_i`` may be a linear combination of vector symbols. The product is expanded
    multilinearly, and each term uses the moment-cumulant formula (module docstring).
    """
    expansions = [list(linear_terms(v).items()) for v in vectors]
    total = sp.S.Zero
    for choice in itertools.product(*expansions):
        coefficient = sp.Mul(*[a for _, a in choice])
        atoms = tuple(sorted((p for p, _ in choice), key=sp.default_sort_key))
        total += coefficient * _atomic_linear_form_moment(atoms)
    return sp.expand(total)


class RowSum(sp.Function):
    """The random scalar ``sum_{k=1}^{r} prod_i (a_k.p_i)`` over the rows ``a_k`` of ``A_0``.

    Arguments are vector symbols in sorted order. ``RowSum(p, q)`` is ``p^T A_0^T A_0 q``.
    """

    @classmethod
    def eval(cls, *vectors):
        ordered = tuple(sorted(vectors, key=sp.default_sort_key))
        if ordered != vectors:
            return cls(*ordered)
        return None

    def _sympystr(self, printer):
        return "S(" + ", ".join(printer.doprint(v) for v in self.args) + ")"


def row_sum(*vectors: sp.Expr) -> sp.Expr:
    """Return ``sum_k prod_i (a_k.p_i)`` for linear combinations ``p_i``, expanded into RowSum atoms."""
    expansions = [list(linear_terms(v).items()) for v in vectors]
    total = sp.S.Zero
    for choice in itertools.product(*expansions):
        coefficient = sp.Mul(*[a for _, a in choice])
        total += coefficient * RowSum(*[p for p, _ in choice])
    return total


def gram(p: sp.Expr, q: sp.Expr) -> sp.Expr:
    """Return ``p^T A_0^T A_0 q = sum_k (a_k.p)(a_k.q)``, written as RowSum atoms."""
    return row_sum(p, q)


def falling_factorial(n: sp.Expr, k: int) -> sp.Expr:
    """Return ``n (n-1) ... (n-k+1)``, the number of ways to give ``k`` groups distinct rows."""
    return sp.expand(sp.ff(n, k))


def iid_row_sum_moment(
    factors: Sequence[tuple],
    row_moment: Callable[[list[tuple]], sp.Expr],
    rows: sp.Expr = r,
) -> sp.Expr:
    """Return ``E[prod_i sum_k g_i(a_k)]`` for row sums over ``rows`` iid rows.

    ``factors`` lists one key per row sum. ``row_moment(block)`` must return
    ``E[prod_{i in block} g_i(a)]`` for one row ``a``. The sum runs over the set
    partitions of the factors, with ``rows (rows-1) ...`` row assignments per partition.
    """
    total = sp.S.Zero
    for partition in multiset_partitions(list(range(len(factors)))):
        term = falling_factorial(rows, len(partition))
        for block in partition:
            term *= row_moment([factors[i] for i in block])
        total += term
    return sp.expand(total)


@functools.lru_cache(maxsize=None)
def _row_sum_moment(factors: tuple[tuple[Vector, ...], ...]) -> sp.Expr:
    def one_row(block: list[tuple[Vector, ...]]) -> sp.Expr:
        return linear_form_moment([v for group in block for v in group])

    return iid_row_sum_moment(factors, one_row)


def row_sum_moment(factors: Sequence[Sequence[Vector]]) -> sp.Expr:
    """Return ``E[prod_i RowSum(*factors[i])]`` for vector symbols."""
    key = tuple(sorted((tuple(f) for f in factors), key=sp.default_sort_key))
    return _row_sum_moment(key)


def expectation(expr: sp.Expr) -> sp.Expr:
    """Return the expectation over ``A_0`` of a polynomial in RowSum atoms.

    Everything that is not a RowSum atom is treated as deterministic, so the caller must
    build ``expr`` with all randomness from ``A_0`` written through :func:`row_sum`.
    """
    total = sp.S.Zero
    for term in sp.Add.make_args(sp.expand(expr)):
        factors: list[tuple[Vector, ...]] = []
        coefficient = sp.S.One
        for factor in sp.Mul.make_args(term):
            base, exponent = factor.as_base_exp()
            if isinstance(base, RowSum):
                factors.extend([base.args] * int(exponent))
            else:
                coefficient *= factor
        total += coefficient * (row_sum_moment(factors) if factors else sp.S.One)
    return sp.expand(total)


def gram_covariance(p: Vector, q: Vector, s: Vector, t: Vector) -> sp.Expr:
    """Return ``Cov[S(p, q), S(s, t)]`` with ``S(p, q) = p^T A_0^T A_0 q``.

    It is ``r sigma2**2 ((p.s)(q.t) + (p.t)(q.s)) + r kappa4 sum_j p_j q_j s_j t_j``. The mean
    product ``r**2`` term cancels symbolically, so numeric variances built from this
    kernel do not lose precision to cancellation at large ``r``.
    """
    product = expectation(gram(p, q) * gram(s, t))
    return sp.expand(product - expectation(gram(p, q)) * expectation(gram(s, t)))
