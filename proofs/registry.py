"""Claims, their registry, and the check that decides "verified" or "FAILED".

A claim pairs a derivation with a stated closed form. Its function returns
``(derived, expected)``. The claim is verified when ``derived - expected`` simplifies to 0
(for sympy expressions), when the sets are equal (for sets), or element by element (for
tuples and lists). On failure the check looks for a counterexample: random small integer
vectors for the vector symbols and small positive values for the scalars, at which the
difference is nonzero.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sympy as sp

from proofs.vectors import Coordinate, CoordinateSum, Vector, evaluate_vectors, linear_terms

Derivation = Callable[[], tuple[object, object]]


@dataclass(frozen=True)
class Claim:
    """A numbered statement with a derivation returning ``(derived, expected)``."""

    name: str
    statement: str
    derive: Derivation


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of checking one claim."""

    number: int
    name: str
    statement: str
    derived: str
    expected: str
    verified: bool
    detail: str
    seconds: float


class ClaimRegistry:
    """An ordered collection of claims with unique names."""

    def __init__(self, claims: list[Claim] | None = None):
        self._claims: list[Claim] = []
        for claim in claims or []:
            self.add(claim)

    def add(self, claim: Claim) -> Claim:
        """Append a claim. Raises ValueError if its name is already registered."""
        if any(existing.name == claim.name for existing in self._claims):
            raise ValueError(f"a claim named {claim.name!r} is already registered")
        self._claims.append(claim)
        return claim

    def claim(self, name: str, statement: str) -> Callable[[Derivation], Derivation]:
        """Register the decorated function as the derivation of a new claim."""

        def decorator(derive: Derivation) -> Derivation:
            self.add(Claim(name, statement, derive))
            return derive

        return decorator

    def copy(self) -> ClaimRegistry:
        """Return a new registry with the same claims."""
        return ClaimRegistry(list(self._claims))

    def __iter__(self) -> Iterator[Claim]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)


def check_claim(number: int, claim: Claim) -> ClaimResult:
    """Run a claim's derivation and compare the derived and expected values.

    An exception raised by the derivation makes the claim fail with the error as detail,
    so one broken derivation does not stop the report.
    """
    start = time.perf_counter()
    try:
        derived, expected = claim.derive()
        verified, detail = compare(derived, expected)
    except Exception as error:  # noqa: BLE001 - a failing derivation is a failed claim
        derived = expected = "<not derived>"
        verified, detail = False, f"derivation raised {type(error).__name__}: {error}"
    return ClaimResult(
        number=number,
        name=claim.name,
        statement=claim.statement,
        derived=_show(derived),
        expected=_show(expected),
        verified=verified,
        detail=detail,
        seconds=time.perf_counter() - start,
    )


def compare(derived: object, expected: object) -> tuple[bool, str]:
    """Return ``(verified, detail)`` for a derived value against the stated one."""
    if isinstance(derived, (tuple, list)) and isinstance(expected, (tuple, list)):
        if len(derived) != len(expected):
            return False, f"derived {len(derived)} values but {len(expected)} were stated"
        for index, (a, b) in enumerate(zip(derived, expected)):
            verified, detail = compare(a, b)
            if not verified:
                return False, f"item {index}: {detail}"
        return True, ""
    if _is_set(derived) or _is_set(expected):
        if all(isinstance(v, (set, frozenset, sp.FiniteSet)) for v in (derived, expected)):
            equal = sp.FiniteSet(*derived) == sp.FiniteSet(*expected)
        else:
            equal = derived == expected
        if equal:
            return True, ""
        return False, f"derived set {_show(derived)} differs from stated set {_show(expected)}"
    if isinstance(derived, sp.MatrixBase) or isinstance(expected, sp.MatrixBase):
        return compare(list(sp.Matrix(derived)), list(sp.Matrix(expected)))
    if isinstance(derived, sp.Basic) or isinstance(expected, sp.Basic):
        difference = sp.sympify(derived) - sp.sympify(expected)
        if is_zero(difference):
            return True, ""
        return False, counterexample(difference)
    if derived == expected:
        return True, ""
    return False, f"derived {derived!r} differs from stated {expected!r}"


def is_zero(expr: sp.Expr) -> bool:
    """Return whether an expression simplifies to 0 (expansion first, then ``simplify``)."""
    expanded = sp.expand(expr)
    if expanded == 0:
        return True
    return sp.simplify(expanded) == 0


def counterexample(difference: sp.Expr, attempts: int = 5, seed: int = 0) -> str:
    """Describe a substitution at which a nonzero difference is visibly nonzero.

    Vector symbols get random integer vectors of length 3 and scalar symbols random
    integers from 1 to 5, so ``d = 3`` and a coordinate ``p_j`` is the first entry of ``p``.
    A difference of vectors is checked through its coefficient on each vector symbol.
    """
    rng = random.Random(seed)
    for label, part in _scalar_parts(sp.expand(difference)):
        vectors = sorted(_vectors_in(part), key=str)
        scalars = sorted(part.free_symbols - set(vectors), key=str)
        for _ in range(attempts):
            values = {v: [rng.randint(-2, 2) for _ in range(3)] for v in vectors}
            expr = part.xreplace({a: sp.Integer(values[a.args[0]][0]) for a in part.atoms(Coordinate)})
            expr = evaluate_vectors(expr, values) if vectors else expr
            numbers = {s: sp.Integer(rng.randint(1, 5)) for s in scalars if s in expr.free_symbols}
            value = sp.simplify(expr.xreplace(numbers))
            if value != 0:
                assignment = ", ".join([f"{s}={n}" for s, n in numbers.items()] + [f"{v}={tuple(values[v])}" for v in vectors])
                return f"counterexample: at {assignment} the {label} of derived minus stated is {value}"
    return f"the difference did not simplify to zero and no counterexample was found: {sp.sstr(difference)}"


def _scalar_parts(expr: sp.Expr) -> list[tuple[str, sp.Expr]]:
    has_bare_vector = any(
        isinstance(factor, Vector) for term in sp.Add.make_args(expr) for factor in sp.Mul.make_args(term)
    )
    if not has_bare_vector:
        return [("value", expr)]
    return [(f"coefficient of {vector}", coefficient) for vector, coefficient in linear_terms(expr).items()]


def _is_set(value: object) -> bool:
    return isinstance(value, (set, frozenset, sp.Set))


def _vectors_in(expr: sp.Expr) -> set[Vector]:
    found = {s for s in expr.free_symbols if isinstance(s, Vector)}
    for atom in expr.atoms(CoordinateSum, Coordinate):
        found |= {a for a in atom.args if isinstance(a, Vector)}
    return found


def _show(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + "; ".join(_show(v) for v in value) + ")"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_show(v) for v in value)) + "}"
    if isinstance(value, sp.Basic):
        return sp.sstr(value)
    return str(value)
