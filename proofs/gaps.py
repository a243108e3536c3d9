"""Shortcuts in the published proof of the rank-stability theorem, each computed exactly.

The theorem (arXiv 2312.03732, Kalajdzievski 2023, Theorem 3.2) states that SGD-trained
adapters have output and input-gradient moments Theta(1) in ``r`` iff
``gamma_r in Theta(1/sqrt(r))``. Its proof sketch takes the following shortcuts. Each
function here computes the exact quantity next to the shortcut, so the report can show
where the shortcut changes the result and where it only changes lower-order terms.

NOTE: the list of shortcuts comes from a summary of the proof, not from its full text,
so the exact wording of each step in the paper was not checked here.

1. ``E[A_0^T A_0] = r sigma2 I`` is substituted inside a power, which drops the
   fluctuations of ``A_0^T A_0`` (:func:`mean_inside_power`).
2. ``(sum_k h_k)**m`` is written as ``sum_k h_k**m`` (:func:`power_of_sum`).
3. ``v_k = dL/df(x_k)`` is treated as fixed although it depends on ``A_0`` from the
   second step on (:func:`dependent_output_gradient`).
4. Odd moments of the output vanish for symmetric inputs, so they cannot be Theta(1)
   (:func:`odd_moment_at_negated_input`).
5. The "only if" direction needs a nonzero leading coefficient
   (:func:`orthogonal_probe_output_moment`).
6. The constants in the ``O(gamma**3)`` remainders grow with the number of steps ``n``
   (:mod:`proofs.expansion`).
"""

from __future__ import annotations

import functools

import sympy as sp

from proofs import sgd
from proofs.moments import expectation, gram, linear_form_moment, row_sum_moment
from proofs.symbols import r, sigma2
from proofs.trajectory import sgd_trajectory, symbolic_batch
from proofs.vectors import BasisVector, Vector, dot, inner, negate_vector, substitute_vector, sum_over_index

P, X = Vector("p"), Vector("x")


def mean_inside_power() -> dict[str, tuple[sp.Expr, sp.Expr]]:
    """Return ``{name: (exact, shortcut)}`` for second moments with ``A_0^T A_0`` replaced by its mean.

    ``"output"``: ``E[S(p, x)**2]`` against ``(r sigma2 (p.x))**2``. The exact value exceeds
    the shortcut by ``r [sigma2**2 ((p.x)**2 + |p|**2 |x|**2) + kappa4 sum_j p_j**2 x_j**2]``,
    which dominates when ``r < |p|**2 |x|**2 / (p.x)**2`` and is all there is when
    ``(p.x) = 0``. ``"input_gradient"``: ``E|A_0^T A_0 p|**2`` against ``(r sigma2)**2 |p|**2``.
    The excess ``r |p|**2 (sigma2**2 (d - 2) + mu4)`` dominates for ``r`` below about ``d``.
    """
    j = sp.Symbol("j", integer=True)
    output_exact = expectation(gram(P, X) ** 2)
    output_shortcut = (r * sigma2 * inner(P, X)) ** 2
    gradient_exact = sum_over_index(expectation(gram(BasisVector(j), P) ** 2), j)
    gradient_shortcut = (r * sigma2) ** 2 * inner(P, P)
    return {
        "output": (output_exact, sp.expand(output_shortcut)),
        "input_gradient": (gradient_exact, sp.expand(gradient_shortcut)),
    }


def power_of_sum(m: int) -> tuple[sp.Expr, sp.Expr]:
    """Return ``(E[S(p, x)**m], sum_k E[((a_k.p)(a_k.x))**m])``, the exact moment and the shortcut.

    ``S(p, x) = sum_k h_k`` with ``h_k = (a_k.p)(a_k.x)``. The exact ``m``-th moment has
    leading term ``(r sigma2 (p.x))**m``, a power ``r**m``. The shortcut is ``r`` times a
    one-row moment, so it grows like ``r`` for every ``m``. Applied to the output second
    moment (``m = 2``) it would turn the exponent ``2 - 4 beta`` into ``1 - 4 beta``.
    """
    if m < 1:
        raise ValueError(f"moment order must be >= 1, got {m!r}")
    exact = row_sum_moment([(P, X)] * m)
    shortcut = r * linear_form_moment([P, X] * m)
    return exact, shortcut


@functools.lru_cache(maxsize=None)
def dependent_output_gradient() -> tuple[sp.Expr, sp.Expr]:
    """Return ``(exact, shortcut)`` for ``E f_2(x)`` under squared loss, two single-example SGD steps.

    With ``L = |W x + f(x) - y|**2 / 2`` the output gradient is ``v = W x - y + f(x)``. At
    step 1 ``f_0 = 0``, so ``v0`` is fixed. At step 2 ``v1 = w1 + f_1(x1)`` with the fixed
    residual ``w1 = W x1 - y1`` and ``f_1(x1) = -eta gamma**2 v0 S(x0, x1)``, which depends on
    ``A_0``. The exact mean keeps that dependence. The shortcut replaces ``v1`` by its
    mean ``w1 - eta gamma**2 r sigma2 (x0.x1) v0``. Their difference comes from the
    covariance of ``S(x0, x1)`` with ``S(x1, x)``. It is of order ``eta**2 gamma**4 r``,
    a factor ``gamma**2`` below the leading ``eta gamma**2 r`` (so ``1/r`` for rsLoRA).
    """
    first, second = symbolic_batch(2)
    residual = Vector("w1")
    states = sgd_trajectory([[first], [second]])

    step_one_output = states[1].output(second.x)
    actual_v1 = residual + step_one_output
    mean_v1 = residual + expectation(step_one_output)

    output = states[2].output(X)
    exact = expectation(substitute_vector(output, second.v, actual_v1))
    shortcut = expectation(substitute_vector(output, second.v, mean_v1))
    return exact, shortcut


def odd_moment_at_negated_input() -> tuple[sp.Expr, sp.Expr]:
    """Return ``(E[(o.f_1(x))**3], the same at -x)`` for one SGD step on ``[(x0, v0)]``.

    ``o`` picks an output direction. The second is minus the first, so for inputs
    ``x`` symmetric about 0 every odd moment of the output averages to 0 at every rank.
    The theorem's "m-th moments Theta(1)" can only hold for even (or absolute) moments.
    """
    direction = Vector("o")
    state = sgd_trajectory([symbolic_batch(1)])[1]
    third = expectation(dot(direction, state.output(X)) ** 3)
    return third, negate_vector(third, X)


def orthogonal_probe_output_moment(batch_size: int = 2) -> tuple[sp.Expr, sp.Expr]:
    """Return the one-step ``E|f_1(x)|**2`` in general and with ``x`` orthogonal to every training input.

    Orthogonality removes the ``r**2`` term, whose coefficient is
    ``eta**2 gamma**4 sigma2**2 |sum_n v_n (x_n.x)|**2``. The moment then grows like
    ``gamma**4 r``, its exponent is ``1 - 4 beta``, and the stable exponent would be 1/4.
    So "stable only if beta = 1/2" needs ``sum_n v_n (x_n.x) != 0``.
    """
    batch = symbolic_batch(batch_size)
    state = sgd_trajectory([batch])[1]
    general = sgd.output_second_moment(state, X)
    orthogonal = general.xreplace({inner(example.x, X): 0 for example in batch})
    return general, sp.expand(orthogonal)

