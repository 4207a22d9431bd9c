"""ReinMax agrees with the published implementation (PyPI ``reinmax`` 0.1.0)."""

from __future__ import annotations

import pytest
import torch

from zoo.estimators import get_estimator

reference = pytest.importorskip("reinmax", reason="the reference package is in the test extra")


@pytest.mark.parametrize("tau", [1.0, 1.3, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("uses_probs", [False, True])
@pytest.mark.parametrize("num_classes", [2, 7])
def test_reinmax_gradient_equals_the_reference_for_the_same_sample(
    tau, dtype, uses_probs, num_classes, monkeypatch, force_sample
):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, num_classes, generator=generator, dtype=dtype)
    index = torch.randint(num_classes, (4, 6, 1), generator=generator)
    sample = torch.zeros_like(logits).scatter_(-1, index, 1.0)
    weight_sample = torch.randn(logits.shape, generator=generator, dtype=dtype)
    weight_probs = torch.randn(logits.shape, generator=generator, dtype=dtype) * uses_probs

    def loss(out_sample, out_probs):
        return (out_sample * weight_sample).sum() + (out_probs**2 * weight_probs).sum()

    # The reference draws with torch.multinomial on rows of shape (N, C).
    monkeypatch.setattr(torch, "multinomial", lambda probs, num_samples, replacement: index.reshape(-1, 1))
    reference_leaf = logits.clone().requires_grad_()
    reference_sample, reference_probs = reference.reinmax(reference_leaf, tau)
    loss(reference_sample, reference_probs).backward()
    monkeypatch.undo()

    force_sample(sample)
    leaf = logits.clone().requires_grad_()
    ours_sample, ours_probs = get_estimator("reinmax", tau=tau)(leaf)
    loss(ours_sample, ours_probs).backward()

    assert torch.equal(ours_sample, reference_sample)
    torch.testing.assert_close(ours_probs, reference_probs)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, rtol=0, atol=tolerance)
