"""The algorithms on a CUDA device: same numbers as on the CPU, results on the inputs' device.

These run only where ``torch.cuda.is_available()`` (CI has no GPU, so there they are reported as
skipped with the reason below). On a GPU machine: ``pytest -m cuda``. Each test computes the same
thing on the CPU and on the GPU and compares, so a device bug (a tensor created on the CPU, a
dtype lost under autocast) fails loudly.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (run `pytest -m cuda` on a GPU machine)")]

CUDA = torch.device("cuda")


def test_distillation_loss_and_its_gradient_match_the_cpu():
    from tlcourse.distill import distillation_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randn(16, 10, generator=g,
                                                                              dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    values = []
    for dev in ("cpu", CUDA):
        student = s.to(dev).requires_grad_(True)
        loss = distillation_loss(student, t.to(dev), y.to(dev), temperature=4.0, alpha=0.9)
        loss.backward()
        assert loss.device.type == torch.device(dev).type
        values.append((loss.detach().cpu(), student.grad.cpu()))
    assert torch.allclose(values[0][0], values[1][0]) and torch.allclose(values[0][1], values[1][1])


def test_gradient_reversal_on_the_gpu():
    from tlcourse.dann import grad_reverse

    x = torch.ones(4, 3, device=CUDA, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    assert x.grad.device.type == "cuda" and torch.equal(x.grad.cpu(), torch.full((4, 3), -0.5))


def test_second_order_maml_with_vmap_on_the_gpu_matches_the_cpu_loop():
    from tlcourse.meta.maml import Tasks, maml_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    g = torch.Generator().manual_seed(1)
    xs, xq = torch.randn(5, 4, 2, generator=g, dtype=torch.float64), torch.randn(5, 6, 2, generator=g,
                                                                                 dtype=torch.float64)
    tasks = Tasks(xs, xs.sum(-1, keepdim=True).sin(), xq, xq.sum(-1, keepdim=True).sin())
    grads = {}
    for dev, batching in (("cpu", "loop"), (CUDA, "vmap")):
        model.to(dev)
        loss = maml_loss(model, Tasks(*(t.to(dev) for t in tasks)), F.mse_loss, steps=2, inner_lr=0.3,
                         batching=batching)
        grads[batching] = torch.cat([gr.flatten().cpu() for gr in
                                     torch.autograd.grad(loss, list(model.parameters()))])
    assert torch.allclose(grads["loop"], grads["vmap"], atol=1e-10)


def test_mmd_on_the_gpu_matches_the_cpu():
    from tlcourse.divergence import mmd2_unbiased

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 3, generator=g), torch.randn(60, 3, generator=g) + 0.5
    cpu, gpu = mmd2_unbiased(x, y), mmd2_unbiased(x.to(CUDA), y.to(CUDA))
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-4, abs=1e-6)


def test_dann_and_cdan_train_on_the_gpu_in_mixed_precision():
    from tlcourse.dann import DomainDiscriminator, train_dann
    from tlcourse.train import make_loader

    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(128, 20, generator=g), torch.randint(0, 3, (128,), generator=g)
    xt = torch.randn(128, 20, generator=g) + 1.0
    for conditioning, width in (("none", 16), ("cdan", 16 * 3)):
        torch.manual_seed(0)
        feats, clf = nn.Sequential(nn.Linear(20, 16), nn.ReLU()).to(CUDA), nn.Linear(16, 3).to(CUDA)
        disc = DomainDiscriminator(width, hidden=32).to(CUDA)
        params = [*feats.parameters(), *clf.parameters(), *disc.parameters()]
        history = train_dann(feats, clf, disc, make_loader(xs, ys, 32, shuffle=True),
                             make_loader(xt, torch.zeros(128), 32, shuffle=True), steps=20,
                             optimizer=torch.optim.SGD(params, lr=0.01, momentum=0.9),
                             conditioning=conditioning, amp=True, log_every=10, progress=False)
        assert all(math.isfinite(v) for v in history["class_loss"] + history["domain_loss"])


def test_prototypical_network_trains_and_evaluates_on_the_gpu():
    from tlcourse.meta.protonets import conv4_embedding, evaluate_protonet, train_protonet

    g = torch.Generator().manual_seed(0)
    images = torch.rand(60, 1, 28, 28, generator=g, device="cpu").to(CUDA)
    labels = torch.arange(12).repeat_interleave(5)
    torch.manual_seed(0)
    net = conv4_embedding(hidden=8, out_channels=8).to(CUDA)
    history = train_protonet(net, images, labels, ways=3, shots=1, queries=2, episodes=5, log_every=5,
                             progress=False)
    assert math.isfinite(history["loss"][-1])
    result = evaluate_protonet(net, images, labels, ways=3, shots=1, queries=2, episodes=20)
    assert 0.0 <= result.mean <= 1.0 and len(result.accuracies) == 20


def test_maml_on_sinusoids_learns_on_the_gpu():
    from tlcourse.meta.maml import evaluate_adaptation, train_maml
    from tlcourse.meta.sinusoid import sample_sinusoid_tasks, sinusoid_mlp, sinusoid_task_sampler

    model = sinusoid_mlp(seed=0).to(CUDA)
    held_out = tuple(t.to(CUDA) for t in sample_sinusoid_tasks(100, 10, 20, seed=5))
    before = evaluate_adaptation(model, held_out, F.mse_loss, steps=1)["loss"][1]
    history = train_maml(model, sinusoid_task_sampler(10), F.mse_loss, iterations=300, log_every=100,
                         progress=False)
    after = evaluate_adaptation(model, held_out, F.mse_loss, steps=1)["loss"][1]
    assert history["meta_loss"][-1] < history["meta_loss"][0] and after < before
