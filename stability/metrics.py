"""The metrics a sweep records, named once and looked up everywhere else.

Coordinate metrics probe each adapter f(h) = gamma B A h after t optimizer steps with
the first training batch at initialisation: its layer inputs X (rows x_m) and the
loss gradients V at the layer's output (rows v_m), both recorded with B = 0.

* ``activation``: RMS over the batch and output coordinates of f(x_m).
* ``input_gradient_rms``: RMS over the batch and input coordinates of
  g_m = gamma A^T B^T v_m, the loss gradient the adapter passes back to its input.
* ``input_gradient``: the coherent part of g. With u_m = sum_n x_n (v_n . v_m), the
  least-squares coefficient c = sum_m g_m . u_m / sum_m |u_m|^2, reported as
  |c| * RMS(u). After one SGD step E[g_m] = -eta gamma^2 r sigma2 u_m, so this is the
  component along the expected direction, free of the fluctuations of A^T A.

Training metrics come from the live step on each step's batch:

* ``grad_norm_A``, ``grad_norm_B``: Frobenius norms of dL/dA and dL/dB at step t.
* ``loss``: the training loss mean_n 0.5 |z_n - y_n|^2 on step t's batch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COORDINATE_METRICS", "FITTED_METRICS", "METRICS", "Metric"]


@dataclass(frozen=True)
class Metric:
    """A recorded quantity: its name, what it measures, and the theory it is compared with."""

    name: str
    description: str
    theory_quantity: str | None  # key of proofs.numeric.theory_slope, None if no theory applies
    fit_step: str  # "coordinate": fitted at --fit-steps; "init": fitted at step 0


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("activation", "RMS of the adapter output on its training inputs", "output", "coordinate"),
        Metric(
            "input_gradient",
            "coherent part of the gradient passed back to the adapter's input",
            "input_gradient",
            "coordinate",
        ),
        Metric(
            "input_gradient_rms",
            "RMS of the gradient passed back to the adapter's input",
            "input_gradient",
            "coordinate",
        ),
        Metric("grad_norm_B", "Frobenius norm of dL/dB", "grad_norm_init", "init"),
        Metric("grad_norm_A", "Frobenius norm of dL/dA (zero at initialisation)", None, "none"),
        Metric("loss", "training loss on the step's batch", None, "none"),
    )
}

COORDINATE_METRICS = ("activation", "input_gradient", "input_gradient_rms")
FITTED_METRICS = ("activation", "input_gradient", "input_gradient_rms", "grad_norm_B")
