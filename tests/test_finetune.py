import pytest
import torch
from torch import nn

from tlcourse.finetune import (count_parameters, discriminative_param_groups, freeze,
                               keep_frozen_batchnorm_in_eval, two_stage_finetune, unfreeze)
from tlcourse.train import fit, make_loader


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.block2(self.block1(x)))


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    return make_loader(x + 3.0, y, 16)  # shifted inputs: BN running stats would move if updated


def test_freeze_by_block_and_counts():
    net = Net()
    _, total = count_parameters(net)
    freeze(net, ["block1", "block2"])
    trainable, _ = count_parameters(net)
    assert trainable == sum(p.numel() for p in net.head.parameters())
    unfreeze(net, "block2")
    assert all(p.requires_grad for p in net.block2.parameters())
    assert not any(p.requires_grad for p in net.block1.parameters())
    assert count_parameters(unfreeze(net))[0] == total
    with pytest.raises(ValueError, match="block1"):
        freeze(net, ["nope"])


def test_frozen_base_weights_and_bn_statistics_do_not_change_during_fit():
    torch.manual_seed(0)
    net = freeze(Net(), ["block1", "block2"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit(net, _data(), epochs=2, optimizer=torch.optim.SGD(net.head.parameters(), 0.1), progress=False)
    after = net.state_dict()
    for key in before:
        if key.startswith("head"):
            assert not torch.equal(before[key], after[key]), key
        else:
            assert torch.equal(before[key], after[key]), f"{key} changed in a frozen block"


def test_without_the_rule_bn_statistics_would_drift():
    torch.manual_seed(0)
    net = freeze(Net(), ["block1", "block2"])
    mean_before = net.block1[1].running_mean.clone()
    net.train()  # plain train mode, as a hand-written loop would leave it
    for x, _ in _data():
        net(x)
    assert not torch.equal(mean_before, net.block1[1].running_mean)
    assert keep_frozen_batchnorm_in_eval(net) == 2 and not net.block1[1].training


def test_discriminative_groups_scale_by_depth_and_skip_frozen():
    net = Net()
    groups = discriminative_param_groups(net, ["block1", "block2", "head"], lr=1e-3, decay=10)
    assert [g["lr"] for g in groups] == pytest.approx([1e-5, 1e-4, 1e-3])
    freeze(net, "block1")
    groups = discriminative_param_groups(net, ["block1", "block2", "head"], lr=1e-3, decay=10)
    assert len(groups) == 2
    with pytest.raises(ValueError, match="decay"):
        discriminative_param_groups(net, ["head"], lr=1e-3, decay=0.5)
    with pytest.raises(ValueError, match="no trainable"):
        discriminative_param_groups(freeze(net), ["head"], lr=1e-3)


def test_two_stage_trains_head_first_then_the_top_block_only():
    torch.manual_seed(0)
    net = Net()
    block1 = {k: v.clone() for k, v in net.block1.state_dict().items()}
    block2 = {k: v.clone() for k, v in net.block2.state_dict().items()}
    h = two_stage_finetune(net, blocks=["block1", "block2"], head="head", train_loader=_data(),
                           head_epochs=1, finetune_epochs=1, unfreeze_top=1, progress=False)
    assert h["stage"] == [1, 2]
    assert all(torch.equal(v, net.block1.state_dict()[k]) for k, v in block1.items())
    assert not all(torch.equal(v, net.block2.state_dict()[k]) for k, v in block2.items())
    with pytest.raises(ValueError, match="unfreeze_top"):
        two_stage_finetune(net, blocks=["block1"], head="head", train_loader=_data(), unfreeze_top=3)


def test_fit_can_be_told_to_let_frozen_bn_drift():
    torch.manual_seed(0)
    net = freeze(Net(), ["block1", "block2"])
    mean_before = net.block1[1].running_mean.clone()
    fit(net, _data(), epochs=1, optimizer=torch.optim.SGD(net.head.parameters(), 0.1), progress=False,
        frozen_bn_eval=False)
    assert not torch.equal(mean_before, net.block1[1].running_mean)
