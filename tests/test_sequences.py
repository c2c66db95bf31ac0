"""Tests of tlcourse.sequences on tiny cases: WordPiece, fragmentation, token windows, long-text
embeddings, z-scoring, sliding windows, the simulated families, the windowed CNN and its cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse import sequences as sq

VOCAB = {"un", "##aff", "##able", "a", "##b", "b", "token", "##izer", "##s"}


# ---------------------------------------------------------------- WordPiece and fragmentation
def test_wordpiece_is_greedy_longest_match_first():
    assert sq.wordpiece("unaffable", VOCAB) == ["un", "##aff", "##able"]
    # longest prefix first: "token" then "##izer", not shorter pieces
    assert sq.wordpiece("tokenizers", VOCAB) == ["token", "##izer", "##s"]
    assert sq.wordpiece("abb", VOCAB) == ["a", "##b", "##b"]


def test_wordpiece_gives_unk_only_when_a_character_has_no_piece():
    assert sq.wordpiece("abz", VOCAB) == ["[UNK]"]            # no piece covers "z"
    assert sq.wordpiece("ab" * 60, VOCAB, max_input_chars=100) == ["[UNK]"]   # too long
    assert sq.wordpiece("", VOCAB) == []


def test_wordpiece_matches_the_minilm_tokenizer_on_real_words():
    tok = sq.minilm_tokenizer()
    for w in ("immunohistochemistry", "estoppel", "the", "backpropagation", "unaffable"):
        assert sq.wordpiece(w, tok.vocab) == tok.tokenize(w)


def test_words_of_splits_on_punctuation():
    assert sq.words_of("Anti-TNF (40 mg), naïve.") == ["Anti", "TNF", "40", "mg", "naïve"]


def test_fragmentation_counts_pieces_not_special_tokens():
    toy = lambda w: sq.wordpiece(w, VOCAB)  # noqa: E731
    stats = sq.fragmentation(["unaffable a", "abz"], toy)
    assert (stats.words, stats.pieces) == (3, 5)               # 3 + 1 + 1 ([UNK] counts as one piece)
    assert stats.pieces_per_word == pytest.approx(5 / 3)
    assert stats.split_share == pytest.approx(1 / 3)
    assert stats.unk_share == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="single string"):
        sq.fragmentation("unaffable", toy)
    with pytest.raises(ValueError, match="no words"):
        sq.fragmentation(["...", "!"], toy)


def test_fragmentation_with_a_hugging_face_tokenizer():
    tok = sq.minilm_tokenizer()
    stats = sq.fragmentation(["the film", "immunohistochemistry"], tok)
    assert stats.words == 3 and stats.pieces == 2 + 6 and stats.unk_share == 0


# ---------------------------------------------------------------- windows of tokens
def test_token_windows_head_tail_chunks():
    ids = list(range(10))
    assert sq.token_windows(ids, 6, "head") == [[0, 1, 2, 3]]
    assert sq.token_windows(ids, 6, "tail") == [[6, 7, 8, 9]]
    assert sq.token_windows(ids, 6, "chunks") == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sq.token_windows(ids, 6, "chunks", stride=3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert sq.token_windows([1, 2], 6, "chunks") == [[1, 2]]   # a short text is one chunk
    with pytest.raises(ValueError, match="max_length"):
        sq.token_windows(ids, 2)
    with pytest.raises(ValueError, match="stride"):
        sq.token_windows(ids, 6, "chunks", stride=5)
    with pytest.raises(ValueError, match="strategy"):
        sq.token_windows(ids, 6, "middle")


@pytest.fixture(scope="module")
def minilm():
    from tlcourse.zoo import minilm as load

    return load()


def test_long_text_embeddings_head_equals_sentence_embeddings(minilm):
    from tlcourse.zoo import sentence_embeddings

    tok, model = minilm
    texts = ["a short sentence", "a much longer sentence about markets, prices and the economy of europe"]
    got, tokens = sq.long_text_embeddings(texts, tok, model, max_length=8)
    want = sentence_embeddings(texts, tok, model, max_length=8)
    assert torch.allclose(got, want, atol=1e-5)
    assert tokens == 5 + 8                                     # 3 words + [CLS] + [SEP], then 8 (cut)


def test_long_text_embeddings_chunks_pool_the_chunk_embeddings(minilm):
    tok, model = minilm
    text = "one two three four five six seven"                 # 7 tokens -> chunks of 3: 3, 3, 1
    pooled, tokens = sq.long_text_embeddings([text], tok, model, max_length=5, strategy="chunks")
    parts = ["one two three", "four five six", "seven"]
    each, _ = sq.long_text_embeddings(parts, tok, model, max_length=5)
    assert torch.allclose(pooled[0], torch.nn.functional.normalize(each.mean(0), dim=0), atol=1e-5)
    assert tokens == 5 + 5 + 3
    maxed, _ = sq.long_text_embeddings([text], tok, model, max_length=5, strategy="chunks", pool="max")
    assert torch.allclose(maxed[0], torch.nn.functional.normalize(each.max(0).values, dim=0), atol=1e-5)
    assert model.training is False


def test_late_label_documents_put_the_label_text_last():
    class Toy:
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [t.split() for t in texts]}

    docs = sq.late_label_documents(["L1", "L2"], ["a b", "c d e", "f"], Toy(), 3)
    assert docs == ["a b c d e L1", "f a b L2"]
    with pytest.raises(ValueError, match="fewer than"):
        sq.late_label_documents(["L"], ["a"], Toy(), 5)


# ---------------------------------------------------------------- series preparation
def test_zscore_numpy_and_torch_agree_and_standardise_each_row():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    z = sq.zscore(x)
    assert np.allclose(z[0].mean(), 0) and np.allclose(z[0].std(), 1, atol=1e-6)
    assert np.allclose(z[1], 0)                                # a constant row becomes zeros
    assert np.allclose(sq.zscore(torch.from_numpy(x)).numpy(), z)
    assert np.allclose(sq.zscore(100 * x + 7), z, atol=1e-6)   # units and offsets removed


def test_sliding_windows_counts_and_contents():
    x = np.arange(10)[None]
    w = sq.sliding_windows(x, 4, 3)
    assert w.shape == (1, 3, 4) and w[0, -1].tolist() == [6, 7, 8, 9]
    assert sq.sliding_windows(x, 10, 1).shape == (1, 1, 10)
    t = sq.sliding_windows(torch.arange(10.0)[None], 4, 3)
    assert np.array_equal(t.numpy(), w.astype(float))
    with pytest.raises(ValueError, match="length"):
        sq.sliding_windows(x, 11, 1)
    with pytest.raises(ValueError, match="stride"):
        sq.sliding_windows(x, 4, 0)


def test_simulated_families_are_seeded_and_differ_as_documented():
    a1, y1 = sq.simulate_waveforms(3, "source", seed=0)
    a2, _ = sq.simulate_waveforms(3, "source", seed=0)
    b, yb = sq.simulate_waveforms(3, "target", seed=0)
    assert np.array_equal(a1, a2) and not np.array_equal(a1, sq.simulate_waveforms(3, "source", seed=1)[0])
    assert a1.shape == (12, 128) and b.shape == (12, 256) and y1.tolist() == yb.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert abs(a1.mean()) < 1.5 and b.mean() > 150                # other units and offsets
    with pytest.raises(ValueError, match="family"):
        sq.simulate_waveforms(1, "weather", seed=0)


def test_windowed_classifier_averages_window_logits_of_normalised_windows():
    torch.manual_seed(0)
    base = sq.SeriesCNN(4)
    clf = sq.WindowedClassifier(base, window=32, stride=16)
    x = torch.randn(2, 128) * 50 + 300
    windows = sq.zscore(x.unfold(-1, 32, 16))                  # (2, 7, 32)
    want = base(windows.reshape(14, 1, 32)).reshape(2, 7, 4).mean(1)
    assert torch.allclose(clf(x), want, atol=1e-5)
    assert torch.allclose(clf(x), clf(x[:, None]), atol=1e-6)  # (N, T) and (N, 1, T) alike
    whole = sq.WindowedClassifier(base, window=None, normalise=False)
    assert torch.allclose(whole(x), base(x[:, None]), atol=1e-5)
    with pytest.raises(ValueError, match="window"):
        sq.WindowedClassifier(base, window=4)


def test_pretrained_series_cnn_is_cached_and_reloaded(tmp_path):
    first = sq.pretrained_series_cnn(seed=0, n_per_class=20, epochs=1, cache_dir=tmp_path)
    second = sq.pretrained_series_cnn(seed=0, n_per_class=20, epochs=1, cache_dir=tmp_path)
    assert not first.source_info["loaded_from_cache"] and second.source_info["loaded_from_cache"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert len(list(tmp_path.glob("series_cnn-source-*.pt"))) == 1
    other = sq.pretrained_series_cnn(seed=1, n_per_class=20, epochs=1, cache_dir=tmp_path)
    assert not other.source_info["loaded_from_cache"]          # another seed, another cache key
    assert 0 <= first.source_info["heldout_accuracy"] <= 1 and not first.training
