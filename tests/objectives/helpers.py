"""Loss + gradient comparison shared by the objective tests."""

import pytest
import torch

# None: the automatic backend (the C++ kernels when built); "torch": the plain PyTorch ops.
BACKENDS = [pytest.param(None, id="auto"), pytest.param("torch", id="torch")]
ARCHITECTURES = ["opt", "gpt_neo", "llama"]


def loss_and_gradients(model, compute_loss):
    """The loss and every trainable parameter's gradient (zeros where none flowed)."""
    model.zero_grad(set_to_none=True)
    loss = compute_loss()
    loss.backward()
    gradients = {
        name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    model.zero_grad(set_to_none=True)
    return loss.detach(), gradients


def assert_same_loss_and_gradients(model, objective_loss, plain_loss, rtol=1e-4, atol=1e-5):
    loss, gradients = loss_and_gradients(model, objective_loss)
    expected_loss, expected_gradients = loss_and_gradients(model, plain_loss)
    torch.testing.assert_close(loss, expected_loss, rtol=rtol, atol=atol)
    assert gradients.keys() == expected_gradients.keys()
    assert any(g.abs().sum() > 0 for g in expected_gradients.values())
    for name, gradient in gradients.items():
        torch.testing.assert_close(
            gradient,
            expected_gradients[name],
            rtol=rtol,
            atol=atol,
            msg=f"gradient of {name} differs",
        )


def nudge(model, scale=0.02, seed=0):
    """Move every weight a little, so that a reference taken before differs from the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
