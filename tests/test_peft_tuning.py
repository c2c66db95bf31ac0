"""Tests of tlcourse.peft_tuning on a tiny random BERT: LoRA's count, zero start and merge, equal
schedules, and the training loop's bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse.peft_tuning import (MeanPoolClassifier, accuracy, batch_schedule, lora_parameter_count,
                                  masked_mean, pooled_features, train_classifier, train_probe, with_lora)


@pytest.fixture()
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    return BertModel(config).eval()


def _tokens(n=24, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (n, t), generator=g)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}, (ids[:, 0] % 2).long()


def test_lora_counts_start_and_merge(tiny_bert):
    model = with_lora(tiny_bert, r=2, seed=0)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n and (".query." in n or ".value." in n) for n in trainable)
    assert sum(trainable.values()) == 2 * 2 * lora_parameter_count(16, 16, 2)   # 2 layers x (query, value)
    assert all(p.requires_grad for p in tiny_bert.parameters())                 # the original is untouched
    tokens, _ = _tokens()
    with torch.no_grad():
        same = model(**tokens).last_hidden_state - tiny_bert(**tokens).last_hidden_state
    assert same.abs().max() == 0                                                # B = 0 at the start
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        adapted = model(**tokens).last_hidden_state
        merged = model.merge_and_unload()(**tokens).last_hidden_state
    assert (adapted - tiny_bert(**tokens).last_hidden_state).abs().max() > 1e-3
    assert torch.allclose(adapted, merged, atol=1e-5)


def test_lora_rejects_unknown_module_names(tiny_bert):
    with pytest.raises(ValueError, match="q_proj"):
        with_lora(tiny_bert, target_modules=("q_proj", "value"))


def test_batch_schedule_is_seeded_and_covers_an_epoch():
    lengths = np.arange(40) % 7
    a, b = batch_schedule(lengths, 8, 5, seed=1), batch_schedule(lengths, 8, 5, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == 5
    assert sorted(np.concatenate(a).tolist()) == list(range(40))               # 5 batches of 8 = one epoch
    assert not all(np.array_equal(x, y) for x, y in zip(a, batch_schedule(lengths, 8, 5, seed=2)))
    with pytest.raises(ValueError, match="batch_size"):
        batch_schedule(lengths, 41, 1, seed=0)


def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(h, torch.tensor([[1, 1, 0]])).item() == 2.0


def test_train_classifier_equal_steps_head_rate_and_accuracy(tiny_bert):
    tokens, labels = _tokens()
    full = MeanPoolClassifier(tiny_bert, 2, seed=0)
    before = {n: p.detach().clone() for n, p in full.named_parameters()}
    info = train_classifier(full, tokens, labels, steps=4, batch_size=6, lr=0.0, head_lr=1e-2, seed=0)
    assert info["steps"] == 4 and info["trainable"] == sum(p.numel() for p in full.parameters())
    moved = {n for n, p in full.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"head.weight", "head.bias"}                                 # lr 0 for the body
    assert 0.0 <= accuracy(full, tokens, labels, batch_size=5) <= 1.0
    lora = MeanPoolClassifier(with_lora(tiny_bert, r=2), 2, seed=0)
    assert train_classifier(lora, tokens, labels, steps=4, batch_size=6, lr=1e-3, seed=0)["steps"] == 4


def test_probe_on_cached_features_matches_a_head_with_the_same_schedule(tiny_bert):
    tokens, labels = _tokens()
    feats = pooled_features(tiny_bert, tokens, batch_size=5)
    with torch.no_grad():
        direct = masked_mean(tiny_bert(**tokens).last_hidden_state, tokens["attention_mask"])
    assert torch.allclose(feats, direct, atol=1e-5)
    head, info = train_probe(feats, tokens["attention_mask"].sum(1).numpy(), labels, 2, steps=4, batch_size=6,
                             lr=1e-2, seed=0)
    frozen = MeanPoolClassifier(tiny_bert, 2, seed=0)
    for p in frozen.encoder.parameters():
        p.requires_grad_(False)
    train_classifier(frozen, tokens, labels, steps=4, batch_size=6, lr=1e-2, seed=0)
    assert info["steps"] == 4 and info["trainable"] == 16 * 2 + 2
    assert torch.allclose(head.weight, frozen.head.weight, atol=1e-5)          # same init, batches and rate
