"""Exact symbolic derivations of how LoRA adapters scale with rank.

An adapter ``f(x) = gamma B A x`` with rank ``r``, ``B_0 = 0`` and ``A_0`` with iid
symmetric entries is trained by SGD or sign descent (Adam's first step). The modules
derive, with sympy, the moments of its output and of the gradient it passes back, for
every finite ``r``, and the scaling exponents ``beta`` of ``gamma = alpha r**(-beta)``
that keep them Theta(1) in ``r``. The result for SGD is the rank-stability theorem of
arXiv 2312.03732 (Kalajdzievski 2023), ``beta = 1/2``. Under sign descent it is ``beta = 1``.

Modules (imported on demand, so ``import proofs`` is cheap):

* :mod:`proofs.vectors`, :mod:`proofs.moments`: symbolic vectors and the moment engine.
* :mod:`proofs.trajectory`, :mod:`proofs.sgd`, :mod:`proofs.expansion`: SGD steps.
* :mod:`proofs.sign_descent`, :mod:`proofs.asymptotics`, :mod:`proofs.equivalences`.
* :mod:`proofs.gaps`: the shortcuts of the published proof, computed.
* :mod:`proofs.numeric`: numpy versions of the formulas for the simulator.
* :mod:`proofs.registry`, :mod:`proofs.claims` (with ``claims_*``), :mod:`proofs.report`:
  the claims and ``python -m proofs``, the claim-by-claim proof report.
"""
