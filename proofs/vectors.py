"""Symbolic deterministic vectors, their inner products and coordinate sums.

A :class:`Vector` is a sympy symbol that stands for a fixed vector (an input ``x``, an
output gradient ``v``). Linear combinations such as ``(v_0.v) * x_0 + (v_1.v) * x_1`` are
ordinary sympy sums whose terms contain exactly one ``Vector`` factor.

Moments of random matrices produce two kinds of deterministic scalars:

* :class:`CoordinateSum` ``(p, q, ...)`` is ``sum_j p_j q_j ...`` over the ``d``
  coordinates. With two arguments it is the inner product ``(p.q)``.
* :class:`Coordinate` ``(p, j)`` is the coordinate ``p_j``. It appears when a basis vector
  ``e_j`` (:class:`BasisVector`) is used to read one coordinate of a random vector, and
  :func:`sum_over_index` turns products of coordinates back into coordinate sums.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from fractions import Fraction

import numpy as np
import sympy as sp

from proofs.symbols import d


class Vector(sp.Symbol):
    """A deterministic vector, written as a commutative sympy symbol."""


class BasisVector(Vector):
    """The standard basis vector ``e_j`` for a symbolic coordinate index ``j``."""

    def __new__(cls, index: sp.Symbol):
        obj = super().__new__(cls, f"e_{index}")
        obj.index = index
        return obj


class CoordinateSum(sp.Function):
    """``sum_j prod_i p_i[j]`` over the ``d`` coordinates of the argument vectors.

    Arguments are sorted, so equal multisets of vectors give the same atom.
    Two arguments give the inner product ``(p.q)``.
    """

    @classmethod
    def eval(cls, *vectors):
        if len(vectors) < 2:
            raise ValueError(f"CoordinateSum needs at least 2 vectors, got {len(vectors)}")
        ordered = tuple(sorted(vectors, key=sp.default_sort_key))
        if ordered != vectors:
            return cls(*ordered)
        return None

    def _sympystr(self, printer):
        names = [printer.doprint(v) for v in self.args]
        if len(names) == 2:
            return f"({names[0]}.{names[1]})"
        counts = Counter(names)
        factors = [f"{n}_j" if k == 1 else f"{n}_j^{k}" for n, k in counts.items()]
        return "sum_j(" + " ".join(factors) + ")"


class Coordinate(sp.Function):
    """The coordinate ``p_j`` of a vector ``p`` at a symbolic index ``j``."""

    nargs = 2

    def _sympystr(self, printer):
        vector, index = self.args
        return f"{printer.doprint(vector)}_{printer.doprint(index)}"


def inner(p: Vector, q: Vector) -> sp.Expr:
    """Return the inner product of two vector symbols, resolving basis vectors."""
    return coordinate_sum([p, q])


def coordinate_sum(vectors: Iterable[Vector]) -> sp.Expr:
    """Return ``sum_i prod_{v in vectors} v[i]`` for vector symbols.

    Basis vectors select one coordinate: ``sum_i e_j[i]**k * p[i] * q[i] = p_j q_j``
    for any ``k >= 1``, and a product of basis vectors alone sums to 1. All basis
    vectors in one call must share their index because ``e_j . e_k`` would need a
    Kronecker delta, which no derivation here uses.
    """
    vectors = list(vectors)
    basis = [v for v in vectors if isinstance(v, BasisVector)]
    others = [v for v in vectors if not isinstance(v, BasisVector)]
    if not basis:
        return CoordinateSum(*others)

    indices = {v.index for v in basis}
    if len(indices) > 1:
        raise ValueError(f"basis vectors with different indices {sorted(map(str, indices))} are not supported")
    (index,) = indices
    return sp.Mul(*[Coordinate(v, index) for v in others])


def linear_terms(expr: sp.Expr) -> dict[Vector, sp.Expr]:
    """Split a linear combination of vectors into ``{vector: coefficient}``.

    Raises ValueError when a term has no vector factor or more than one, because such
    an expression is not a vector.
    """
    terms: dict[Vector, sp.Expr] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        if term == 0:
            continue
        factors = sp.Mul.make_args(term)
        vectors = [f for f in factors if isinstance(f, Vector)]
        if len(vectors) != 1:
            raise ValueError(f"term {term} is not a scalar times one vector")
        (vector,) = vectors
        coefficient = sp.Mul(*[f for f in factors if f is not vector])
        terms[vector] = terms.get(vector, sp.S.Zero) + coefficient
    return terms


def dot(u: sp.Expr, w: sp.Expr) -> sp.Expr:
    """Return the inner product of two linear combinations of vectors."""
    left = linear_terms(u)
    right = linear_terms(w)
    total = sp.S.Zero
    for (p, a), (q, b) in itertools.product(left.items(), right.items()):
        total += a * b * inner(p, q)
    return total


def sum_over_index(expr: sp.Expr, index: sp.Symbol, dimension: sp.Expr = d) -> sp.Expr:
    """Sum an expression over the coordinate index ``index`` from 1 to ``dimension``.

    In every term the coordinates ``p_j, q_j, ...`` at this index multiply to
    ``p_j q_j ...``, which sums to the coordinate sum of those vectors (an inner product
    when there are two). A term without any coordinate at this index is multiplied by
    the dimension.
    """
    total = sp.S.Zero
    for term in sp.Add.make_args(sp.expand(expr)):
        vectors: list[Vector] = []
        rest = sp.S.One
        for factor in sp.Mul.make_args(term):
            base, exponent = factor.as_base_exp()
            if isinstance(base, Coordinate) and base.args[1] == index:
                vectors.extend([base.args[0]] * int(exponent))
            else:
                rest *= factor
        if not vectors:
            total += rest * dimension
        elif len(vectors) == 1:
            raise ValueError(f"term {term} has a single coordinate {vectors[0]}_{index}, whose sum is not an inner product")
        else:
            total += rest * CoordinateSum(*vectors)
    return total


def evaluate_vectors(expr: sp.Expr, values: Mapping[Vector, object], dimension: int | None = None) -> sp.Expr:
    """Substitute concrete vectors into an expression of coordinate sums.

    ``values`` maps each vector symbol to a 1-D sequence. Integer and ``Fraction``
    entries are summed exactly, floats in float64. Input and output vectors may differ in
    length, but the vectors inside one coordinate sum must match. ``d`` becomes
    ``dimension``, or the common length when all vectors have one length.
    Symbols other than vectors (``r``, ``sigma2``, ...) are left in place.
    """
    arrays = {v: _as_exact_or_float(x) for v, x in values.items()}
    replacements: dict[sp.Expr, sp.Expr] = {}
    if expr.has(d):
        lengths = {len(x) for x in arrays.values()}
        if dimension is None and len(lengths) != 1:
            raise ValueError(f"vectors have lengths {sorted(lengths)}, so pass dimension= to set d")
        replacements[d] = sp.Integer(dimension if dimension is not None else lengths.pop())

    for atom in expr.atoms(CoordinateSum):
        missing = [v for v in atom.args if v not in arrays]
        if missing:
            raise KeyError(f"no value given for vector(s) {missing} in {atom}")
        lengths = {len(arrays[v]) for v in atom.args}
        if len(lengths) != 1:
            raise ValueError(f"vectors in {atom} have different lengths {sorted(lengths)}")
        (length,) = lengths
        replacements[atom] = _number(sum(math.prod(arrays[v][i] for v in atom.args) for i in range(length)))
    return expr.xreplace(replacements)


def _as_exact_or_float(values: object) -> list:
    items = list(np.asarray(values, dtype=object).ravel())
    if all(isinstance(x, (int, np.integer, Fraction)) for x in items):
        return [Fraction(int(x)) if not isinstance(x, Fraction) else x for x in items]
    return [float(x) for x in items]


def _number(value: object) -> sp.Expr:
    if isinstance(value, Fraction):
        return sp.Rational(value.numerator, value.denominator)
    if isinstance(value, (int, np.integer)):
        return sp.Integer(int(value))
    return sp.Float(float(value))


def substitute_vector(expr: sp.Expr, vector: Vector, replacement: sp.Expr) -> sp.Expr:
    """Replace a vector symbol by a linear combination everywhere in an expression.

    Inner products ``(vector.q)`` become ``dot(replacement, q)``, and a bare ``vector``
    factor becomes ``replacement``. Coordinate sums of more than two vectors that contain
    ``vector`` are rejected because they are not linear in one argument.
    """
    atoms = {}
    for atom in expr.atoms(CoordinateSum):
        if vector not in atom.args:
            continue
        if len(atom.args) != 2:
            raise ValueError(f"cannot substitute {vector} inside {atom}; only inner products are supported")
        p, q = atom.args
        left = replacement if p == vector else p
        right = replacement if q == vector else q
        atoms[atom] = dot(left, right)
    _reject_other_atoms(expr, vector)
    atoms[vector] = replacement
    return sp.expand(expr.xreplace(atoms))


def negate_vector(expr: sp.Expr, vector: Vector) -> sp.Expr:
    """Return the expression at ``-vector``: each coordinate sum gets ``(-1)**(count of vector)``."""
    atoms = {}
    for atom in expr.atoms(CoordinateSum):
        # xreplace does not descend into a matched atom, so even counts map to themselves.
        atoms[atom] = -atom if atom.args.count(vector) % 2 else atom
    _reject_other_atoms(expr, vector)
    atoms[vector] = -vector
    return sp.expand(expr.xreplace(atoms))


def _reject_other_atoms(expr: sp.Expr, vector: Vector) -> None:
    for atom in expr.atoms(sp.Function):
        if not isinstance(atom, CoordinateSum) and vector in atom.args:
            raise ValueError(f"{vector} occurs inside {atom}, which cannot be rewritten; take the expectation first")
