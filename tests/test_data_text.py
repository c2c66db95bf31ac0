"""Tests for the text half of tlcourse.data: load_text, its registry entries and its error messages."""
import os
from pathlib import Path

import numpy as np
import pytest

from tlcourse.data import REGISTRY, DataError, TextData, load_text, text_datasets

SIZES = {("agnews", "dev"): 10_001, ("agnews", "test"): 7_600,
         ("sst2", "train"): 60_614, ("sst2", "dev"): 6_735, ("sst2", "test"): 872}


def test_every_split_loads_with_its_documented_size_and_classes():
    assert text_datasets() == {"agnews": ("dev", "test"), "sst2": ("train", "dev", "test")}
    for (name, split), size in SIZES.items():
        d = load_text(name, split)
        assert len(d) == len(d.labels) == size, (name, split)
        assert d.labels.dtype == np.int64 and set(np.unique(d.labels)) == set(range(len(d.classes)))
        assert all(isinstance(t, str) and t for t in d.texts)


def test_agnews_labels_follow_the_usual_order_and_backslashes_are_spaces():
    d = load_text("agnews", "test")
    assert d.classes == ("World", "Sports", "Business", "Sci/Tech")
    assert np.bincount(d.labels).tolist() == [1900] * 4        # the test split is balanced
    assert d.classes[d.labels[0]] == "Business" and d.texts[0].startswith("Unions representing workers")
    assert not any("\\" in t for t in d.texts)
    assert d.texts[1].startswith("SPACE.com - TORONTO, Canada -- A second team")


def test_sst2_header_is_skipped_and_quotes_stay_characters():
    d = load_text("sst2", "test")
    assert d.classes == ("negative", "positive")
    assert d.texts[0] == "it 's a charming and often affecting journey ." and d.labels[0] == 1
    assert "sentence" not in d.texts[:1]
    assert any('"' in t or "'" in t for t in d.texts)


def test_subsets_are_reproducible_and_seeded():
    a, b = load_text("agnews", "dev", n=50, seed=3), load_text("agnews", "dev", n=50, seed=3)
    assert a.texts == b.texts and (a.labels == b.labels).all()
    c = load_text("agnews", "dev", n=50, seed=4)
    assert a.texts != c.texts
    full = load_text("agnews", "dev")
    order = np.random.default_rng(3).permutation(len(full))[:50]
    assert a.texts == tuple(full.texts[i] for i in order)
    assert (a.labels == full.labels[order]).all()


def test_registered_files_are_checked(shared_data_text, tmp_path, monkeypatch):
    for relpath in ("agnews/dev.tsv", "agnews/test.tsv", "sst2/train.tsv", "sst2/dev.tsv", "sst2/test.tsv"):
        assert REGISTRY[relpath].url.startswith("https://raw.githubusercontent.com/forest-snow/alps/3c7ef2c9/data/")
    # a corrupt copy in the data folder fails loudly, naming the file and what to do
    bad = tmp_path / "data" / "sst2" / "test.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_bytes((shared_data_text / "sst2" / "test.tsv").read_bytes().replace(b"charming", b"charmless"))
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="checksum mismatch for sst2/test.tsv.*delete it"):
        load_text("sst2", "test")


@pytest.fixture
def shared_data_text() -> Path:
    return Path(os.environ["TLCOURSE_DATA"])


def test_bad_names_splits_and_sizes_are_refused_with_a_useful_message():
    with pytest.raises(ValueError, match="unknown text dataset 'imdb'; known text datasets: agnews, sst2"):
        load_text("imdb")
    with pytest.raises(ValueError, match="agnews split 'train' is not available: the AG News train file"):
        load_text("agnews", "train")
    with pytest.raises(ValueError, match=r"sst2 has no split 'validation'; its splits are \('train', 'dev', 'test'\)"):
        load_text("sst2", "validation")
    for n in (0, 873, 2.5, True):
        with pytest.raises(ValueError, match=r"n must be an integer in \[1, 872\]"):
            load_text("sst2", "test", n=n)


def test_textdata_validates_its_fields():
    with pytest.raises(ValueError, match="one per text"):
        TextData(("a", "b"), np.array([0]), ("x",), "toy", "test")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        TextData(("a",), np.array([1]), ("x",), "toy", "test")
    with pytest.raises(ValueError, match="tuple of strings"):
        TextData(["a"], np.array([0]), ("x",), "toy", "test")
