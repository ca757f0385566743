"""The quick model's linear head: standardization folded into a plain head, and a refit that starts from a head."""

from __future__ import annotations

import numpy as np

from camfleet_trainer.head import LinearHead, fit_head


def _classes(seed: int = 0, n: int = 150, dims: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping classes whose dimensions differ in scale by three orders of magnitude."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = rng.normal(0, 1, (3, dims))
    scale = np.logspace(-2, 1, dims)
    x = (centres[labels] + rng.normal(0, 1.5, (n, dims))) * scale
    return x.astype(np.float32), labels


def test_the_standardized_fit_does_not_depend_on_each_dimension_s_scale() -> None:
    x, labels = _classes()
    head = fit_head(x, labels, 3, on_embedding=False, max_iter=200)
    rescaled = fit_head(x * np.float32(7.0), labels, 3, on_embedding=False, max_iter=200)
    assert np.allclose(head.logits(x), rescaled.logits(x * np.float32(7.0)), atol=2e-3)
    # folded: the head reads the raw features (no mean or std left for the caller to apply)
    assert head.weight.shape == (3, 24) and head.weight.dtype == np.float32


def test_a_warm_start_from_a_converged_head_stays_where_it_is() -> None:
    x, labels = _classes(1)
    head = fit_head(x, labels, 3, on_embedding=False, max_iter=300)
    again = fit_head(x, labels, 3, on_embedding=False, start=head, max_iter=3)
    assert np.allclose(head.logits(x), again.logits(x), atol=1e-3)


def test_a_refit_from_the_first_head_reaches_the_cold_fit_in_a_few_iterations() -> None:
    """What quick mode's label check does: refit without the few images it doubts, from the first head, which is
    near the new optimum; ten iterations from it land about ten times closer to a converged fit than from zeros."""
    rng = np.random.default_rng(2)
    labels = np.arange(300) % 3
    x = np.abs(rng.normal(0, 1, (3, 200))[labels] + rng.normal(0, 1.5, (300, 200))).astype(np.float32)
    first = fit_head(x, labels, 3)
    kept = np.arange(len(labels)) % 20 != 0
    cold = fit_head(x[kept], labels[kept], 3, max_iter=300)

    def gap(head: LinearHead) -> float:
        return float(np.abs(head.logits(x) - cold.logits(x)).max())

    warm = fit_head(x[kept], labels[kept], 3, start=first, max_iter=10)
    from_zeros = fit_head(x[kept], labels[kept], 3, max_iter=10)
    assert gap(first) > 0.1  # leaving 5 % out moves the optimum
    assert gap(warm) < 0.01 and gap(warm) < gap(from_zeros) / 5, (gap(warm), gap(from_zeros))
