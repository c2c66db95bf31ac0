import copy

import pytest
import torch
from torch import nn

from tlcourse.finetune import freeze, unfreeze
from tlcourse.forgetting import batchnorm_drift, retained_accuracy, weight_drift, with_head
from tlcourse.models import DigitCNN
from tlcourse.train import fit, make_loader


def _images(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_with_head_copies_and_leaves_both_arguments_alone():
    model, head = DigitCNN(num_classes=4).eval(), nn.Linear(128, 7)
    weight_before = model.block1[0].weight.clone()
    out = with_head(model, head)
    assert out.head.out_features == 7 and model.head.out_features == 4
    assert out.head is not head and out.block1 is not model.block1
    assert torch.equal(out.head.weight, head.weight)
    assert not out.training and not out.head.training
    with torch.no_grad():
        out.block1[0].weight.add_(1.0)
    assert torch.equal(model.block1[0].weight, weight_before)
    with pytest.raises(ValueError, match="classifier"):
        with_head(model, head, attr="classifier")


def test_retained_accuracy_is_the_source_accuracy_of_the_body_with_the_old_head():
    source = DigitCNN(num_classes=4).eval()
    x, _ = _images()
    y = source(x).argmax(1)
    tuned = with_head(source, nn.Linear(128, 19))
    assert retained_accuracy(tuned, source.head, x, y) == 1.0
    assert tuned.head.out_features == 19  # the argument is not changed
    # Changing the body changes what the old head reads: the accuracy drops.
    with torch.no_grad():
        tuned.block3[1].weight.mul_(-1.0)
    assert retained_accuracy(tuned, source.head, x, y) < 1.0


def test_retained_accuracy_rejects_the_wrong_head_and_bad_inputs():
    source = DigitCNN(num_classes=10).eval()
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="pretrained model's head"):
        retained_accuracy(source, nn.Linear(128, 3), x, torch.tensor([0, 9, 1, 2]))
    with pytest.raises(ValueError, match="equal length"):
        retained_accuracy(source, source.head, x, torch.tensor([0, 1]))


def test_weight_drift_is_a_relative_distance():
    reference = DigitCNN(num_classes=4)
    model = copy.deepcopy(reference)
    assert weight_drift(model, reference) == 0.0
    with torch.no_grad():
        for p in model.block2.parameters():
            p.mul_(2.0)  # theta - theta_0 = theta_0 in block2
    assert weight_drift(model, reference, ["block2"]) == pytest.approx(1.0)
    assert weight_drift(model, reference, "block1") == 0.0
    assert 0 < weight_drift(model, reference) < 1
    with pytest.raises(ValueError, match="head"):
        weight_drift(with_head(model, nn.Linear(128, 9)), reference)
    with pytest.raises(ValueError, match="no parameters"):
        weight_drift(model, reference, ["block9"])
    zero = nn.Linear(2, 2)
    nn.init.zeros_(zero.weight), nn.init.zeros_(zero.bias)
    with pytest.raises(ValueError, match="all zero"):
        weight_drift(nn.Linear(2, 2), zero)


@pytest.mark.parametrize("frozen_bn_eval", [True, False])
def test_batchnorm_drift_of_a_frozen_base(frozen_bn_eval):
    torch.manual_seed(0)
    source = DigitCNN(num_classes=4)
    model = freeze(copy.deepcopy(source))
    unfreeze(model, "head")
    x, y = _images(64)
    fit(model, make_loader(x + 0.5, y, 16), epochs=1, progress=False, frozen_bn_eval=frozen_bn_eval,
        optimizer=torch.optim.SGD(model.head.parameters(), lr=0.1))
    drift = batchnorm_drift(model, source)
    assert list(drift.index) == ["block1.1", "block2.1", "block3.2"]
    if frozen_bn_eval:
        assert (drift == 0).all().all()
        assert weight_drift(model, source, ["block1", "block2", "block3"]) == 0.0
    else:
        assert (drift.mean_drift > 0).all() and (drift.var_drift > 0).all()
        assert (drift.batches_seen == 4).all()
        # The parameters themselves did not move: only the buffers did.
        assert weight_drift(model, source, ["block1", "block2", "block3"]) == 0.0


def test_batchnorm_drift_needs_batchnorm():
    with pytest.raises(ValueError, match="no BatchNorm"):
        batchnorm_drift(nn.Linear(2, 2), nn.Linear(2, 2))
