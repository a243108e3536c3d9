"""SGD after ``n`` steps, expanded in powers of ``gamma`` with the remainder orders computed.

:mod:`proofs.trajectory` gives the exact state ``A_n = A_0 M_n``, ``B_n = N_n A_0^T`` when
the output gradients are fixed vectors. Here the coefficients of ``M_n`` and ``N_n`` are
split by powers of ``gamma``. Two facts are proved:

* For every ``n`` (by induction, :func:`induction_step`): ``N_n = -eta gamma L_n + gamma**3 P_n``
  and ``M_n = I + gamma**2 Q_n`` with ``L_n = sum_{k<n} v_k x_k^T`` and ``P_n``, ``Q_n``
  polynomials in ``gamma**2``. So ``B_n = (-eta gamma sum_{k<n} v_k x_k^T + O(gamma**3)) A_0^T``
  and ``A_n = A_0 (I + O(gamma**2))``, and the adapter's output is
  ``f_n(x) = -eta gamma**2 sum_{k<n} v_k S(x_k, x) + O(gamma**4)``.
* The constants in the remainders grow with ``n`` (:func:`repeated_example_coefficients`).
  For one example repeated ``n`` times, the ``gamma**3`` coefficient of ``N_n`` is
  ``-eta**3 C(n, 3) |v|**2 |x|**2 v x^T`` while the leading one is ``-eta n v x^T``. Their
  ratio ``eta**2 gamma**2 (n-1)(n-2) |v|**2 |x|**2 / 6`` must be small for the
  leading term to describe step ``n``, so the expansion is not uniform in ``n``.
"""

from __future__ import annotations

import sympy as sp

from proofs.symbols import eta, gamma
from proofs.trajectory import Example, Outer, sgd_trajectory, symbolic_batch
from proofs.vectors import Vector, inner


def gamma_coefficient(outer: Outer, power: int) -> Outer:
    """Return the coefficient of ``gamma**power`` in every term of a sum of outer products."""
    result = {}
    for key, value in outer.items():
        coefficient = sp.expand(value).coeff(gamma, power)
        if coefficient != 0:
            result[key] = coefficient
    return result


def gamma_powers(outer: Outer) -> set[int]:
    """Return the powers of ``gamma`` that occur in a sum of outer products."""
    powers: set[int] = set()
    for value in outer.values():
        powers |= {int(m[0]) for m in sp.Poly(sp.expand(value), gamma).monoms()}
    return powers


def steps_state(n: int):
    """Return the exact state after ``n`` single-example SGD steps on distinct examples ``(x_k, v_k)``."""
    return sgd_trajectory([[example] for example in symbolic_batch(n)])[n]


def leading_B_term(n: int) -> Outer:
    """Return ``-eta sum_{k<n} v_k x_k^T``, the stated ``gamma**1`` coefficient of ``N_n``."""
    return {(example.v, example.x): -eta for example in symbolic_batch(n)}


def remainder_orders(n: int) -> tuple[int | None, int | None]:
    """Return the lowest ``gamma`` power of ``N_n``'s remainder and of ``M_n - I``.

    The remainder of ``N_n`` is everything but its ``gamma**1`` part. ``None`` means the
    remainder is exactly zero (``n <= 2`` for ``N_n``, ``n <= 1`` for ``M_n``).
    """
    state = steps_state(n)
    n_powers = gamma_powers(state.N) - {1}
    m_powers = gamma_powers(state.M)
    return (min(n_powers) if n_powers else None, min(m_powers) if m_powers else None)


def induction_step() -> tuple[sp.Expr, sp.Expr]:
    """Prove the ``gamma``-parity form of ``(N_t, M_t)`` for all ``t`` by one symbolic step.

    Non-commuting symbols stand for the matrices: ``L``, ``P``, ``Q`` and their transposes
    (``P``, ``Q`` are polynomials in ``gamma**2``), and ``v x^T`` for the next example.
    Assume ``N_t = -eta gamma L + gamma**3 P`` and ``M_t = I + gamma**2 Q``. One SGD step
    gives ``N_{t+1} = N_t - eta gamma v x^T M_t^T`` and ``M_{t+1} = M_t - eta gamma N_t^T v x^T``.
    Returns ``(P', Q')`` defined by ``N_{t+1} = -eta gamma (L + v x^T) + gamma**3 P'`` and
    ``M_{t+1} = I + gamma**2 Q'``. Both contain no ``gamma`` or only even powers, which
    closes the induction (``N_0 = 0``, ``M_0 = I`` start it with ``L = P = Q = 0``).
    """
    L, LT, P, PT, Q, QT = sp.symbols("L L^T P P^T Q Q^T", commutative=False)
    v, xT = sp.symbols("v x^T", commutative=False)
    identity = sp.S.One

    N_t = -eta * gamma * L + gamma**3 * P
    N_t_transpose = -eta * gamma * LT + gamma**3 * PT
    M_t = identity + gamma**2 * Q
    M_t_transpose = identity + gamma**2 * QT

    N_next = sp.expand(N_t - eta * gamma * v * xT * M_t_transpose)
    M_next = sp.expand(M_t - eta * gamma * N_t_transpose * v * xT)

    P_next = sp.expand((N_next + eta * gamma * (L + v * xT)) / gamma**3)
    Q_next = sp.expand((M_next - identity) / gamma**2)
    return P_next, Q_next


def is_even_in_gamma(expr: sp.Expr) -> bool:
    """Return whether an expression (possibly non-commutative) has only even powers of ``gamma``."""
    return sp.expand(expr - expr.subs(gamma, -gamma)) == 0 and not sp.expand(expr).has(1 / gamma)


def repeated_example_coefficients(n: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """Return the ``gamma**1`` and ``gamma**3`` coefficients of ``N_n`` and the ``gamma**2`` one of ``M_n``.

    The trajectory repeats one example ``(x, v)`` ``n`` times, so each ``N_n`` and
    ``M_n - I`` has a single term (``v x^T`` and ``x x^T``). Returns
    ``(n1, n3, m2)`` with ``N_n = (gamma n1 + gamma**3 n3 + ...) v x^T`` and
    ``M_n = I + (gamma**2 m2 + ...) x x^T``.
    """
    example = Example(Vector("x"), Vector("v"))
    state = sgd_trajectory([[example]] * n)[n]
    n_term = state.N.get((example.v, example.x), sp.S.Zero)
    m_term = state.M.get((example.x, example.x), sp.S.Zero)
    return (
        sp.expand(n_term).coeff(gamma, 1),
        sp.expand(n_term).coeff(gamma, 3),
        sp.expand(m_term).coeff(gamma, 2),
    )


def repeated_example_formulas(n: sp.Expr) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """Return the stated closed forms of :func:`repeated_example_coefficients` for symbolic ``n``.

    ``n1 = -eta n``, ``n3 = -eta**3 C(n, 3) |v|**2 |x|**2`` and ``m2 = eta**2 C(n, 2) |v|**2``.
    They follow from the recursions ``m2(n+1) = m2(n) + eta**2 n |v|**2`` and
    ``n3(n+1) = n3(n) - eta |x|**2 m2(n)``, which sum to binomial coefficients.
    """
    x, v = Vector("x"), Vector("v")
    return (
        -eta * n,
        -(eta**3) * sp.binomial(n, 3) * inner(v, v) * inner(x, x),
        eta**2 * sp.binomial(n, 2) * inner(v, v),
    )


def summed_recursions(n: sp.Symbol) -> tuple[sp.Expr, sp.Expr]:
    """Sum the repeated-example recursions in closed form for symbolic ``n``.

    Returns ``(m2(n), n3(n))`` from ``m2(n) = sum_{k<n} eta**2 k |v|**2`` and
    ``n3(n) = -eta |x|**2 sum_{k<n} m2(k)``.
    """
    x, v = Vector("x"), Vector("v")
    k = sp.Symbol("k", integer=True, nonnegative=True)
    m2 = sp.summation(eta**2 * k * inner(v, v), (k, 0, n - 1))
    n3 = -eta * inner(x, x) * sp.summation(m2.subs(n, k), (k, 0, n - 1))
    return sp.factor(m2), sp.factor(n3)
