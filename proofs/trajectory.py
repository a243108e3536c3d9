"""Exact SGD trajectory of a LoRA adapter, written relative to its initialisation ``A_0``.

The adapter is ``f(x) = gamma * B A x`` with ``B_0 = 0``. SGD on a batch of examples
``(x_n, v_n)``, where ``v_n = dL/df(x_n)``, uses the gradients

    grad_B L = gamma * sum_n v_n x_n^T A^T,    grad_A L = gamma * B^T sum_n v_n x_n^T,

and updates both factors from the same point: ``B <- B - eta grad_B L`` and
``A <- A - eta grad_A L``.

Proved by induction on the step ``t``: ``A_t = A_0 M_t`` and ``B_t = N_t A_0^T`` with

    M_t = I + sum c (x_a x_b^T),    N_t = sum c (v_a x_b^T),

where the coefficients ``c`` are polynomials in ``eta``, ``gamma`` and inner products of
the examples, and contain no ``A_0``. The induction step is the update itself:

    N_{t+1} = N_t - eta gamma sum_n v_n (M_t x_n)^T,
    M_{t+1} = M_t - eta gamma sum_n (N_t^T v_n) x_n^T.

Both stay in the same form because ``(x_b v_a^T) v_n = (v_a.v_n) x_b``. So after any
number of steps the output is ``f_t(x) = gamma N_t A_0^T A_0 M_t x``, which is linear in
the random matrix ``A_0^T A_0``. This is exact when every ``v_n`` is a fixed vector.
In real training ``v_n`` depends on ``A_0`` from the second step on
(:mod:`proofs.gaps` measures the effect).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sympy as sp

from proofs.moments import gram
from proofs.symbols import eta, gamma
from proofs.vectors import BasisVector, Vector, inner, linear_terms

Outer = dict[tuple[Vector, Vector], sp.Expr]
"""A sum of outer products ``sum c (left right^T)``, keyed by ``(left, right)``."""


@dataclass(frozen=True)
class Example:
    """One training example: the input ``x`` and the output gradient ``v = dL/df(x)``."""

    x: Vector
    v: Vector


def symbolic_batch(size: int, first_index: int = 0) -> list[Example]:
    """Return examples ``(x_i, v_i)`` with fresh vector symbols, indices from ``first_index``."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size!r}")
    return [Example(Vector(f"x{i}"), Vector(f"v{i}")) for i in range(first_index, first_index + size)]


@dataclass
class FactoredState:
    """The adapter after some SGD steps, as ``A_t = A_0 M_t`` and ``B_t = N_t A_0^T``.

    ``M`` contains the terms of ``M_t - I`` (pairs of input vectors), and ``N`` the terms
    of ``N_t`` (an output-gradient vector and an input vector).
    """

    N: Outer = field(default_factory=dict)
    M: Outer = field(default_factory=dict)

    def apply_M(self, y: sp.Expr) -> sp.Expr:
        """Return ``M_t y = y + sum c x_a (x_b.y)`` for a vector expression ``y``."""
        return y + sum((coeff * a * _dot_with(b, y) for (a, b), coeff in self.M.items()), sp.S.Zero)

    def apply_N_transpose(self, w: sp.Expr) -> sp.Expr:
        """Return ``N_t^T w = sum c x_b (v_a.w)``, an input-space vector."""
        return sum((coeff * b * _dot_with(a, w) for (a, b), coeff in self.N.items()), sp.S.Zero)

    def sgd_step(self, batch: Sequence[Example], learning_rate: sp.Expr = eta, scale: sp.Expr = gamma) -> FactoredState:
        """Return the state after one SGD step on ``batch`` (both factors updated at once)."""
        new_N = dict(self.N)
        new_M = dict(self.M)
        for example in batch:
            _add_outer(new_N, example.v, self.apply_M(example.x), -learning_rate * scale)
            _add_outer(new_M, self.apply_N_transpose(example.v), example.x, -learning_rate * scale)
        return FactoredState(_drop_zeros(new_N), _drop_zeros(new_M))

    def output(self, x: sp.Expr, scale: sp.Expr = gamma) -> sp.Expr:
        """Return ``f_t(x) = gamma N_t A_0^T A_0 M_t x`` as output vectors times RowSum atoms."""
        mx = self.apply_M(x)
        return sum((scale * coeff * a * gram(b, mx) for (a, b), coeff in self.N.items()), sp.S.Zero)

    def input_gradient_coordinate(self, w: sp.Expr, index: sp.Symbol, scale: sp.Expr = gamma) -> sp.Expr:
        """Return coordinate ``index`` of ``gamma A_t^T B_t^T w``, the gradient passed to the input.

        ``gamma A_t^T B_t^T w = gamma M_t^T A_0^T A_0 N_t^T w``, and its coordinate ``j`` is
        ``gamma (M_t e_j)^T A_0^T A_0 (N_t^T w)``.
        """
        return scale * gram(self.apply_M(BasisVector(index)), self.apply_N_transpose(w))


def sgd_trajectory(batches: Iterable[Sequence[Example]], learning_rate: sp.Expr = eta, scale: sp.Expr = gamma) -> list[FactoredState]:
    """Return the states ``[state_0, state_1, ...]`` after SGD steps on successive batches."""
    states = [FactoredState()]
    for batch in batches:
        states.append(states[-1].sgd_step(batch, learning_rate, scale))
    return states


def as_matrix_terms(outer: Outer) -> sp.Expr:
    """Return ``sum c * left * right_T`` with non-commutative symbols, for display and comparison."""
    total = sp.S.Zero
    for (a, b), coeff in outer.items():
        total += coeff * sp.Symbol(str(a), commutative=False) * sp.Symbol(f"{b}^T", commutative=False)
    return total


def _dot_with(p: Vector, y: sp.Expr) -> sp.Expr:
    """Return ``(p.y)`` for a vector symbol and a vector expression (which may contain ``e_j``)."""
    return sum((coeff * inner(p, q) for q, coeff in linear_terms(y).items()), sp.S.Zero)


def _add_outer(target: Outer, left: sp.Expr, right: sp.Expr, factor: sp.Expr) -> None:
    for a, ca in linear_terms(left).items():
        for b, cb in linear_terms(right).items():
            key = (a, b)
            target[key] = sp.expand(target.get(key, sp.S.Zero) + factor * ca * cb)


def _drop_zeros(outer: Outer) -> Outer:
    return {key: value for key, value in outer.items() if value != 0}
