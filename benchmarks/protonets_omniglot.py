"""Prototypical networks on Omniglot: 5-way accuracy on the characters of alphabets never trained on.

One model is trained per setting (Snell et al. trained one per shot count) on the background
alphabets of :func:`tlcourse.meta.episodes.split_by_alphabet`, then tested on 5-way 1-shot and
5-way 5-shot episodes (15 queries per class) drawn from the three held-out alphabets only.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from .core import Benchmark, Metric, Target

SETTINGS = {
    "smoke": dict(ways=5, shots=1, queries=5, episodes=15, rotations=False, lr=1e-3, halve_lr_every=2000,
                  test_episodes=100, separate_5shot_model=False),
    "cpu": dict(ways=20, shots=1, queries=5, episodes=800, rotations=True, lr=1e-3, halve_lr_every=2000,
                test_episodes=1000, separate_5shot_model=False),
    "full": dict(ways=60, shots=1, queries=5, episodes=20000, rotations=True, lr=1e-3, halve_lr_every=2000,
                 test_episodes=1000, separate_5shot_model=True),
}


def run(params: Mapping, seed: int) -> dict[str, float]:
    from tlcourse.meta.episodes import omniglot_by_alphabet
    from tlcourse.meta.protonets import conv4_embedding, evaluate_protonet, train_protonet
    from tlcourse.runtime import device

    omni = omniglot_by_alphabet(rotations=params["rotations"])
    train_classes, labels = omni.train_classes, omni.labels
    where = device()
    images = omni.images.to(where)

    def trained(shots: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        net = conv4_embedding().to(where)
        train_protonet(net, images, labels, ways=params["ways"], shots=shots,
                       queries=params["queries"], episodes=params["episodes"], classes=train_classes,
                       lr=params["lr"], halve_lr_every=params["halve_lr_every"], progress=False,
                       seed=seed)
        return net

    nets = {1: trained(params["shots"])}
    nets[5] = trained(5) if params["separate_5shot_model"] else nets[1]
    out = {}
    for shots, net in nets.items():
        result = evaluate_protonet(net, images, labels, ways=5, shots=shots, queries=15,
                                   episodes=params["test_episodes"], classes=omni.test_classes,
                                   seed=1000 + seed)
        out[f"acc_5w{shots}s"], out[f"ci95_5w{shots}s"] = result.mean, result.ci95
    return out


def describe(p: Mapping) -> str:
    shots = "1- and 5-shot models" if p["separate_5shot_model"] else f"one {p['shots']}-shot model"
    rot = ("their 90/180/270-degree rotations as extra classes (716 classes)" if p["rotations"]
           else "no rotations (179 classes)")
    return (f"Omniglot 28x28 from the two 'small' background zips (8 alphabets, 242 characters): "
            f"{shots} trained on the 179 characters of 5 alphabets with {rot}, "
            f"{p['episodes']} Adam episodes of {p['ways']}-way with {p['queries']} queries per class "
            f"(lr {p['lr']:g} halved every {p['halve_lr_every']}), 4-block conv embedding (64 filters); "
            f"tested on {p['test_episodes']} 5-way episodes with 15 queries per class from the "
            f"63 characters of the 3 held-out alphabets (Balinese, Early Aramaic, Tagalog).")


BENCHMARKS = (
    Benchmark(
        name="protonets_omniglot",
        title="Prototypical networks, Omniglot 5-way (tlcourse.meta.protonets)",
        settings=SETTINGS,
        run=run,
        metrics=(
            Metric("acc_5w1s", "5-way 1-shot accuracy on unseen alphabets (%)", anchor=0.988, scale=100),
            Metric("acc_5w5s", "5-way 5-shot accuracy on unseen alphabets (%)", anchor=0.997, scale=100),
        ),
        anchor=("Snell, Swersky & Zemel (2017), Table 1: 98.8 % (5-way 1-shot) and 99.7 % (5-way "
                "5-shot), averaged over 1,000 test episodes; MAML (Finn et al., 2017, Table 1) "
                "reports 98.7 % and 99.9 % in the same setting. Both use the split of Vinyals et al. "
                "(2016): 1,200 characters of the full Omniglot, each also rotated by 90/180/270 "
                "degrees, for training, and the other 423 characters, rotated too, for testing, with "
                "60-way 1-shot or 5-shot training episodes. We train on 179 characters of 5 "
                "alphabets (seven times fewer) and test on 63 characters of 3 alphabets never seen "
                "(no rotated test classes), for far fewer episodes in the cpu setting."),
        describe=describe,
        targets=(
            Target("5-way 1-shot accuracy at least 88 % (cpu setting)",
                   lambda m, s: m["acc_5w1s"] >= 0.88, settings=("cpu",)),
            Target("5-way 1-shot accuracy at least 93 % (full setting)",
                   lambda m, s: m["acc_5w1s"] >= 0.93, settings=("full",)),
        ),
    ),
)
