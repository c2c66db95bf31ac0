"""Tests of tlcourse.attention on tiny cases: rollout algebra, shares, rankings and the intervention."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tlcourse.attention import (attention_maps, attention_received, attention_rollout, eager_attention,
                                gradient_x_input, random_tokens, removal_effect, remove_tokens,
                                token_group_share, top_k_tokens)


def _stochastic(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g).softmax(-1)


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=32)
    return BertModel(config).eval()


def test_rollout_of_identity_attention_is_identity():
    a = torch.eye(5).expand(3, 2, 4, 5, 5)
    assert torch.allclose(attention_rollout(a), torch.eye(5).expand(2, 5, 5))
    assert torch.allclose(attention_rollout(a, residual=0.0), torch.eye(5).expand(2, 5, 5))


def test_rollout_rows_sum_to_one_and_match_the_definition():
    a = _stochastic(3, 2, 4, 6, 6)
    r = attention_rollout(a, residual=0.5)
    assert torch.allclose(r.sum(-1), torch.ones(2, 6), atol=1e-6)
    layers = [0.5 * a[l].mean(1) + 0.5 * torch.eye(6) for l in range(3)]
    layers = [m / m.sum(-1, keepdim=True) for m in layers]
    assert torch.allclose(r, layers[2] @ layers[1] @ layers[0], atol=1e-6)   # last layer on the left
    assert not torch.allclose(r, layers[0] @ layers[1] @ layers[2], atol=1e-4)


def test_rollout_of_one_layer_without_residual_is_the_head_mean():
    a = _stochastic(1, 3, 4, 4)
    assert torch.allclose(attention_rollout(a, residual=0.0), a[0].mean(0), atol=1e-6)


def test_rollout_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        attention_rollout(torch.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="residual"):
        attention_rollout(_stochastic(1, 1, 3, 3), residual=1.5)
    with pytest.raises(ValueError, match="negative"):
        attention_rollout(-torch.ones(1, 1, 3, 3))


def test_attention_received_and_group_share():
    maps = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(attention_received(maps, mask), torch.tensor([[0.75, 0.25, 0.0]]))
    a = maps[None, :, None]                                    # (L=1, B=1, H=1, T, T)
    share = token_group_share(a, mask, torch.tensor([[True, False, False]]))
    assert share.shape == (1, 1) and share.item() == pytest.approx(0.75)


def test_top_k_and_random_tokens_respect_the_candidates():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.6, 0.1]])
    cand = torch.tensor([[False, True, True, True], [True, True, True, False]])
    assert top_k_tokens(scores, cand, 2).tolist() == [[False, False, True, True], [False, True, True, False]]
    pick = random_tokens(cand, 2, seed=3)
    assert (pick.sum(1) == 2).all() and not (pick & ~cand).any()
    assert torch.equal(pick, random_tokens(cand, 2, seed=3))
    with pytest.raises(ValueError, match="k must lie"):
        top_k_tokens(scores, cand, 4)


def test_remove_tokens_and_removal_effect():
    mask = torch.ones(2, 3, dtype=torch.long)
    remove = torch.tensor([[True, False, False], [False, False, False]])
    assert remove_tokens(mask, remove).tolist() == [[0, 1, 1], [1, 1, 1]]
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])   # token t votes for class weights[t]

    def classifier(ids, m):
        return 5 * (m.float() @ weights)

    effect = removal_effect(classifier, None, mask, remove)         # sentence 0: votes (2, 1) -> (1, 1)
    assert effect["drop"][1].item() == 0.0
    assert effect["drop"][0].item() == pytest.approx(torch.tensor([10.0, 5.0]).softmax(0)[0].item() - 0.5)
    assert effect["flipped"].tolist() == [False, False]


def test_gradient_x_input_of_a_linear_model():
    w = torch.tensor([1.0, -2.0])

    def classifier(x, m):   # logit of class 1 = sum_t m_t <w, x_t>, class 0 = 0
        s = (x @ w * m).sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)

    x = torch.tensor([[[1.0, 1.0], [3.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    sal = gradient_x_input(classifier, x, mask, torch.tensor([1]))
    assert sal.tolist() == [[1.0, 3.0, 0.0]]                       # |<w, x_t>|, padding 0


def test_attention_maps_of_a_tiny_bert(tiny_bert):
    ids = torch.tensor([[2, 5, 7, 3, 0], [2, 9, 3, 0, 0]])
    mask = (ids != 0).long()
    tiny_bert.set_attn_implementation("sdpa")
    with torch.no_grad():
        assert not tiny_bert(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    maps = attention_maps(tiny_bert, ids, mask)
    assert maps.shape == (2, 2, 4, 5, 5)
    assert tiny_bert.config._attn_implementation == "sdpa"         # restored after the call
    rows = maps.sum(-1).permute(1, 3, 0, 2)[mask.bool()]          # real query rows: (n_real, L, H)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert maps[..., 4].abs().max() < 1e-6                          # padded keys get no weight
    with eager_attention(tiny_bert) as m:
        assert m.config._attn_implementation == "eager"


def test_eager_attention_needs_a_transformers_model():
    with pytest.raises(TypeError, match="set_attn_implementation"):
        with eager_attention(nn.Linear(2, 2)):
            pass
