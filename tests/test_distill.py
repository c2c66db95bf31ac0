import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from tlcourse.distill import distill, distillation_loss, soft_targets
from tlcourse.train import make_loader, predict

FAST = settings(max_examples=25, deadline=None)


def _logits(n=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(n, c, generator=g), 2 * torch.randn(n, c, generator=g),
            torch.randint(0, c, (n,), generator=g))


def test_alpha_zero_is_exactly_cross_entropy():
    s, t, y = _logits()
    assert torch.equal(distillation_loss(s, t, y, temperature=3.0, alpha=0.0), F.cross_entropy(s, y))


def test_identical_logits_give_zero_soft_term():
    s, _, y = _logits()
    soft_only = distillation_loss(s, s.clone(), y, temperature=4.0, alpha=1.0)
    assert soft_only.item() == pytest.approx(0.0, abs=1e-7)
    mixed = distillation_loss(s, s.clone(), y, temperature=4.0, alpha=0.3)
    assert mixed.item() == pytest.approx(0.7 * F.cross_entropy(s, y).item(), rel=1e-6)


def test_loss_matches_the_definition_on_a_2x3_example():
    s = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    t = [[3.0, 0.0, 0.0], [0.0, 1.0, 1.5]]
    y = [0, 2]
    temperature, alpha = 2.0, 0.7

    def softmax(row, temp):
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    kl = sum(sum(q * math.log(q / p) for q, p in zip(softmax(tr, temperature), softmax(sr, temperature)))
             for sr, tr in zip(s, t)) / 2
    ce = -sum(math.log(softmax(sr, 1.0)[label]) for sr, label in zip(s, y)) / 2
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # float64 inputs are computed in float64
    got64 = distillation_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
                              torch.tensor(y), temperature, alpha)
    assert got64.dtype == torch.float64 and got64.item() == pytest.approx(expected, rel=1e-12)


def _soft_gradient_norm(temperature, with_t_squared):
    s, t, y = _logits(16, 10, seed=1)
    s.requires_grad_(True)
    loss = distillation_loss(s, t, y, temperature=temperature, alpha=1.0)
    if not with_t_squared:
        loss = loss / temperature ** 2  # the course notes' version, without the factor
    loss.backward()
    return s.grad.norm().item()


def test_t_squared_keeps_soft_gradient_scale_comparable_across_temperatures():
    temps = (1.0, 2.0, 4.0, 8.0)
    with_factor = [_soft_gradient_norm(T, True) for T in temps]
    without = [_soft_gradient_norm(T, False) for T in temps]
    assert max(with_factor) / min(with_factor) < 1.5
    # without T**2 each doubling of T divides the gradient by about 4, overall ~1/64 from T=1 to T=8
    assert all(b < a / 3 for a, b in zip(without, without[1:]))
    assert without[-1] / without[0] < 2 / 64


def test_teacher_gets_no_gradient():
    s, t, y = _logits()
    s.requires_grad_(True)
    t.requires_grad_(True)
    distillation_loss(s, t, y).backward()
    assert t.grad is None and s.grad is not None


def test_soft_targets_are_probabilities_that_flatten_with_temperature():
    _, t, _ = _logits()
    assert torch.allclose(soft_targets(t, 1.0), F.softmax(t, dim=1))
    assert torch.allclose(soft_targets(t, 7.0).sum(1), torch.ones(len(t)))
    entropies = [-(p * p.log()).sum(1).mean().item() for p in (soft_targets(t, T) for T in (1, 4, 1e4))]
    assert entropies[0] < entropies[1] < entropies[2] == pytest.approx(math.log(t.shape[1]), rel=1e-4)


@FAST
@given(temperature=st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf"))))
def test_non_positive_or_non_finite_temperature_raises(temperature):
    s, t, y = _logits()
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, t, y, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(t, temperature)


@FAST
@given(alpha=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9), st.just(float("nan"))))
def test_alpha_outside_unit_interval_raises(alpha):
    s, t, y = _logits()
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, y, alpha=alpha)


@FAST
@given(n=st.integers(1, 5), c=st.integers(1, 5), dn=st.integers(0, 2), dc=st.integers(0, 2))
def test_mismatched_student_and_teacher_shapes_raise(n, c, dn, dc):
    if dn == dc == 0:
        dc = 1
    y = torch.zeros(n, dtype=torch.long)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.randn(n, c), torch.randn(n + dn, c + dc), y)


@FAST
@given(labels=st.lists(st.integers(-3, 6), min_size=1, max_size=6))
def test_labels_are_checked(labels):
    c = 4
    s, t = torch.randn(len(labels), c), torch.randn(len(labels), c)
    y = torch.tensor(labels)
    if all(0 <= v < c for v in labels):
        assert torch.isfinite(distillation_loss(s, t, y))
    else:
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            distillation_loss(s, t, y)


def test_bad_shapes_and_label_types_raise():
    s, t, y = _logits(4, 3)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        distillation_loss(s, t, y[:3])
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        distillation_loss(s, t, y[:, None])
    with pytest.raises(ValueError, match="integer"):
        distillation_loss(s, t, y.float())
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        distillation_loss(s[0], t[0], y[:1])


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return centres[y] + 0.8 * torch.randn(n, 2, generator=g), y


def test_distill_teaches_the_student_to_agree_with_a_fixed_teacher():
    x, y = _blobs(400, seed=0)
    torch.manual_seed(0)
    teacher = nn.Linear(2, 3)
    with torch.no_grad():  # a fixed linear teacher that knows the blob layout
        teacher.weight.copy_(torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]]))
        teacher.bias.zero_()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))

    def agreement():
        return (predict(student, x).argmax(1) == predict(teacher, x).argmax(1)).float().mean().item()

    start = agreement()
    h = distill(student, teacher, make_loader(x, y, 32, shuffle=True), epochs=4, temperature=4.0, alpha=0.9,
                optimizer=torch.optim.Adam(student.parameters(), 1e-2), val_loader=make_loader(x, y, 200),
                progress=False)
    assert start < 0.7 and agreement() > 0.95
    assert h["train_agreement"][-1] > h["train_agreement"][0]
    assert sorted(h.rows[0]) == ["epoch", "seconds", "train_acc", "train_agreement", "train_loss",
                                 "val_acc", "val_loss"]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training  # its mode is restored


def test_distill_runs_with_bfloat16_autocast_and_checks_inputs():
    x, y = _blobs(64, seed=1)
    teacher, student = nn.Linear(2, 3), nn.Linear(2, 3)
    opt = torch.optim.SGD(student.parameters(), 0.1)
    h = distill(student, teacher, make_loader(x, y, 16), epochs=1, optimizer=opt, temperature=2.0, alpha=0.5,
                amp=True, progress=False)
    assert math.isfinite(h["train_loss"][0])
    with pytest.raises(ValueError, match="same device"):
        distill(student, nn.Linear(2, 3, device="meta"), make_loader(x, y, 16), epochs=1, optimizer=opt,
                temperature=2.0, alpha=0.5, progress=False)
    with pytest.raises(ValueError, match="empty"):
        distill(student, teacher, [], epochs=1, optimizer=opt, temperature=2.0, alpha=0.5, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        distill(student, teacher, make_loader(x, y, 16), epochs=1, optimizer=opt, temperature=0, alpha=0.5)


def test_stored_teacher_logits_replace_the_teacher_call():
    x, y = _blobs(96, seed=2)
    torch.manual_seed(0)
    teacher = nn.Linear(2, 3)
    stored = predict(teacher, x)
    runs = []
    for teacher_arg, dataset in ((teacher, torch.utils.data.TensorDataset(x, y)),
                                 (None, torch.utils.data.TensorDataset(x, y, stored))):
        torch.manual_seed(1)
        student = nn.Linear(2, 3)
        loader = torch.utils.data.DataLoader(dataset, batch_size=16)
        h = distill(student, teacher_arg, loader, epochs=2, temperature=3.0, alpha=0.7, progress=False,
                    optimizer=torch.optim.SGD(student.parameters(), lr=0.1))
        runs.append((h["train_loss"], student.weight.detach().clone()))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    assert torch.allclose(runs[0][1], runs[1][1], atol=1e-6)
    with pytest.raises(ValueError, match="teacher_logits"):
        distill(nn.Linear(2, 3), None, make_loader(x, y, 16), epochs=1, temperature=2.0, alpha=0.5,
                optimizer=torch.optim.SGD(teacher.parameters(), lr=0.1), progress=False)


# ---------------------------------------------------------------- tlcourse.distill_demo (chapter T13)
from tlcourse import distill_demo  # noqa: E402


def test_digits_splits_are_disjoint_seeded_and_can_withhold_a_class():
    full, other = distill_demo.digits_splits(0), distill_demo.digits_splits(1)
    assert {k: len(v[1]) for k, v in full.items()} == {"transfer": 1000, "labelled": 300, "val": 300, "test": 497}
    rows = {k: {tuple(r) for r in v[0].tolist()} for k, v in full.items()}
    assert rows["labelled"] <= rows["transfer"]
    assert not torch.equal(full["test"][0], other["test"][0])
    withheld = distill_demo.digits_splits(0, withhold=3)
    assert len(withheld["labelled"][1]) == 300 and not (withheld["labelled"][1] == 3).any()
    assert torch.equal(withheld["test"][0], full["test"][0]) and torch.equal(withheld["val"][1], full["val"][1])
    assert torch.equal(distill_demo.digits_splits(0)["labelled"][0], full["labelled"][0])
    with pytest.raises(ValueError, match="n_labelled"):
        distill_demo.digits_splits(0, n_labelled=0)


def test_shuffled_batches_cover_every_example_once_and_reshuffle():
    batches = distill_demo.ShuffledBatches(torch.arange(10), torch.arange(10), batch_size=4, seed=0)
    epochs = [torch.cat([b[0] for b in batches]) for _ in range(2)]
    assert len(batches) == 3 and all(sorted(e.tolist()) == list(range(10)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    with pytest.raises(ValueError):
        distill_demo.ShuffledBatches(torch.arange(3), torch.arange(4), batch_size=2, seed=0)


def test_student_alone_is_plain_cross_entropy_with_the_same_budget():
    x, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    alone, steps = distill_demo.train_student(x, y, None, seed=0, epochs=3)
    same, steps_same = distill_demo.train_student(x, y, torch.randn(40, 10), seed=0, alpha=0.0, epochs=3)
    distilled, steps_kd = distill_demo.train_student(x, y, torch.randn(40, 10), seed=0, epochs=3)
    assert steps == steps_same == steps_kd == 3 and torch.equal(predict(alone, x), predict(same, x))
    assert not torch.equal(predict(alone, x), predict(distilled, x))
    assert 0 <= distill_demo.accuracy(alone, x, y) <= 1


def test_soft_term_gradient_norm_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), 3 * torch.randn(5, 4, generator=g)
    for T in (1.0, 4.0):
        closed = T * (F.softmax(s / T, 1) - F.softmax(t / T, 1)) / len(s)   # gradient of T**2 * KL
        assert distill_demo.soft_term_gradient_norm(s, t, T) == pytest.approx(closed.norm().item(), rel=1e-5)
        assert distill_demo.soft_term_gradient_norm(s, t, T, t_squared=False) == pytest.approx(
            closed.norm().item() / T ** 2, rel=1e-5)
