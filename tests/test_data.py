"""Tests for tlcourse.data: the registry, the lookup order, checksums, downloads and every dataset."""
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tlcourse.data import (REGISTRY, DataError, ImageData, data_dirs, datasets, fetch_file, load,
                           resize, to_rgb)

SMALL = "mnist/t10k-labels-idx1-ubyte.gz"  # 4.5 KB, enough to exercise every path of fetch_file


@pytest.fixture(scope="module")
def shared_data() -> Path:
    return Path(os.environ["TLCOURSE_DATA"])


@pytest.fixture
def empty_dirs(tmp_path, monkeypatch):
    """An empty data folder and an empty cache, both set in the environment."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("TLCOURSE_DATA", str(data))
    monkeypatch.setenv("TLCOURSE_CACHE", str(cache))
    return data, cache / "data"


def _copy(src: Path, folder: Path, relpath: str, flip_byte: int | None = None) -> Path:
    body = bytearray(src.read_bytes())
    if flip_byte is not None:
        body[flip_byte] ^= 0xFF
    dest = folder / relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(body))
    return dest


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers, usable as a context manager."""

    def __init__(self, body: bytes, content_length: int | None = None):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body) if content_length is None else content_length)}


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- registry -------------------------------------------------------------------------------

def test_registry_matches_sha256sums(shared_data):
    sums = {}
    for line in (shared_data / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        sums[path.removeprefix("./")] = digest
    for relpath, entry in REGISTRY.items():
        assert entry.sha256 == sums[relpath], relpath


def test_registry_urls_pin_a_commit():
    for relpath, entry in REGISTRY.items():
        if entry.url is None:  # only the zip assembled for the course has no upstream copy
            assert relpath == "mnist_m/mnist_m_test_png.zip"
            continue
        assert entry.url.startswith("https://raw.githubusercontent.com/"), relpath
        assert entry.url.endswith(Path(relpath).name), relpath


def test_every_registered_file_is_served_from_the_data_folder(shared_data):
    for relpath in REGISTRY:
        assert fetch_file(relpath) == shared_data / relpath


# --- lookup order and checksums --------------------------------------------------------------

def test_data_folder_wins_over_cache_and_cache_is_the_fallback(shared_data, empty_dirs, monkeypatch):
    data, cache = empty_dirs
    in_cache = _copy(shared_data / SMALL, cache, SMALL)
    assert fetch_file(SMALL) == in_cache
    in_data = _copy(shared_data / SMALL, data, SMALL)
    assert fetch_file(SMALL) == in_data
    monkeypatch.delenv("TLCOURSE_DATA")
    assert fetch_file(SMALL) == in_cache
    assert data_dirs() == [cache]


def test_data_dirs_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path / "c"))
    assert data_dirs() == [tmp_path / "d", tmp_path / "c" / "data"]
    monkeypatch.delenv("TLCOURSE_CACHE")
    assert data_dirs()[-1] == Path.home() / ".cache" / "tlcourse" / "data"


@pytest.mark.parametrize("where", ["data", "cache"])
def test_corrupted_copy_raises_checksum_error(shared_data, empty_dirs, where):
    folder = dict(zip(["data", "cache"], empty_dirs))[where]
    _copy(shared_data / SMALL, folder, SMALL, flip_byte=100)
    with pytest.raises(DataError, match="checksum") as info:
        fetch_file(SMALL)
    assert REGISTRY[SMALL].sha256 in str(info.value) and "delete" in str(info.value)


def test_a_file_changed_after_a_good_read_is_hashed_again(shared_data, empty_dirs):
    data, _ = empty_dirs
    path = _copy(shared_data / SMALL, data, SMALL)
    fetch_file(SMALL)
    body = bytearray(path.read_bytes())
    body[200] ^= 0xFF  # same size; only the content and the mtime change
    path.write_bytes(bytes(body))
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="checksum"):
        fetch_file(SMALL)


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError, match="known files: .*mnist/t10k-images"):
        fetch_file("mnist/train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="known datasets: .*usps"):
        load("cifar10")
    with pytest.raises(ValueError, match=r"\('train', 'test'\)"):
        load("usps", split="val")
    with pytest.raises(ValueError, match="only split='test'"):
        load("mnist", split="train")
    with pytest.raises(ValueError, match=r"\('all',\)"):
        load("sklearn_digits")  # the default split is 'test'


# --- downloads ---------------------------------------------------------------------------------

def test_missing_file_with_no_internet_says_what_to_do(empty_dirs, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        fetch_file(SMALL)
    message = str(info.value)
    for part in (SMALL, "TLCOURSE_DATA", str(empty_dirs[0]), REGISTRY[SMALL].url, "no route to host"):
        assert part in message
    assert _files_under(empty_dirs[1]) == []


def test_truncated_download_leaves_no_partial_file(shared_data, empty_dirs, monkeypatch):
    body = (shared_data / SMALL).read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: FakeResponse(body[:1000], content_length=len(body)))
    with pytest.raises(DataError, match=f"truncated: received 1000 of {len(body)} bytes"):
        fetch_file(SMALL)
    assert _files_under(empty_dirs[1]) == []


def test_download_with_wrong_bytes_is_rejected(shared_data, empty_dirs, monkeypatch):
    body = bytearray((shared_data / SMALL).read_bytes())
    body[50] ^= 0xFF
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(bytes(body)))
    with pytest.raises(DataError, match="checksum"):
        fetch_file(SMALL)
    assert _files_under(empty_dirs[1]) == []


def test_good_download_lands_in_the_cache_and_is_reused(shared_data, empty_dirs, monkeypatch):
    body = (shared_data / SMALL).read_bytes()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return FakeResponse(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    path = fetch_file(SMALL)
    assert path == empty_dirs[1] / SMALL and path.read_bytes() == body
    assert urls == [REGISTRY[SMALL].url]
    assert fetch_file(SMALL) == path and len(urls) == 1  # second call: served from the cache
    assert _files_under(empty_dirs[1]) == [path]


def test_file_without_upstream_copy_is_not_downloaded(empty_dirs, monkeypatch):
    def no_call(*args, **kwargs):
        raise AssertionError("urlopen must not be called")

    monkeypatch.setattr(urllib.request, "urlopen", no_call)
    with pytest.raises(DataError, match="no single upstream file.*set TLCOURSE_DATA"):
        fetch_file("mnist_m/mnist_m_test_png.zip")


# --- datasets ----------------------------------------------------------------------------------

EXPECTED = {  # (name, split): (N, C, H, W, number of classes)
    ("mnist", "test"): (10000, 1, 28, 28, 10),
    ("emnist_digits", "test"): (10000, 1, 28, 28, 10),
    ("emnist_letters", "test"): (14800, 1, 28, 28, 19),
    ("usps", "train"): (7291, 1, 16, 16, 10),
    ("usps", "test"): (2007, 1, 16, 16, 10),
    ("mnist_m", "test"): (9001, 3, 32, 32, 10),
    ("sklearn_digits", "all"): (1797, 1, 8, 8, 10),
    ("omniglot", "all"): (4840, 1, 28, 28, 242),
}


def test_expected_covers_every_dataset():
    assert {(n, s) for n, splits in datasets().items() for s in splits} == set(EXPECTED)


@pytest.mark.parametrize("name,split", list(EXPECTED))
def test_dataset_shapes_dtypes_ranges_and_labels(name, split):
    n, c, h, w, k = EXPECTED[name, split]
    d = load(name, split)
    assert (d.name, d.split, len(d)) == (name, split, n)
    assert d.images.shape == (n, c, h, w) and d.images.dtype == np.float32
    assert d.images.min() == 0.0 and d.images.max() == 1.0
    assert 0.05 < d.images.mean() < 0.5  # white strokes on black (MNIST-M: coloured backgrounds)
    assert d.labels.dtype == np.int64 and set(np.unique(d.labels)) == set(range(k))
    assert len(d.classes) == k
    x, y = d.to_tensors()
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and tuple(x.shape) == d.images.shape


def test_emnist_letters_are_a_to_s_with_paper_counts():
    d = load("emnist_letters")
    assert d.classes == tuple("ABCDEFGHIJKLMNOPQRS")
    assert np.bincount(d.labels).tolist() == [800] * 18 + [400]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_emnist_digits_are_upright_like_mnist():
    mnist, emnist = load("mnist"), load("emnist_digits")
    means = np.stack([mnist.images[mnist.labels == k, 0].mean(0) for k in range(10)])
    for digit in range(10):
        mean = emnist.images[emnist.labels == digit, 0].mean(0)
        assert _corr(mean, means[digit]) > _corr(mean.T, means[digit]), digit

    def nearest_mean_accuracy(x):  # classify EMNIST by correlation with the MNIST class means
        x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(1, keepdims=True)
        c = means.reshape(10, -1) - means.reshape(10, -1).mean(1, keepdims=True)
        return np.mean(np.argmax(x @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, 1) == emnist.labels)

    x = emnist.images[:, 0]
    upright = nearest_mean_accuracy(x)  # about 0.54; the transposed/flipped ones reach 0.16-0.29
    assert upright > 0.45
    for wrong in (x.transpose(0, 2, 1), x[:, ::-1], x[:, :, ::-1]):
        assert upright > nearest_mean_accuracy(wrong) + 0.2


def test_emnist_letters_are_upright():
    d = load("emnist_letters")
    i_bar = d.images[d.labels == d.classes.index("I"), 0].mean(0)  # 'I' and 'l': a vertical bar
    assert i_bar.sum(0).max() / i_bar.sum(0).mean() > i_bar.sum(1).max() / i_bar.sum(1).mean()


def test_mnist_m_item_i_is_mnist_test_image_i():
    mnist, mnist_m = load("mnist"), load("mnist_m")
    assert np.array_equal(mnist_m.labels, mnist.labels[:9001])
    gray = mnist_m.images[:300].mean(1)
    ref = resize(mnist.images[:301], 32)[:, 0]
    matched = np.mean([abs(_corr(gray[i], ref[i])) for i in range(300)])
    shifted = np.mean([abs(_corr(gray[i], ref[i + 1])) for i in range(300)])
    assert matched > shifted + 0.2


def test_decoded_cache_is_reused_and_survives_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path))
    first = load("usps", "test")
    (npz,) = (tmp_path / "decoded").glob("usps-test-*.npz")
    second = load("usps", "test")
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    npz.write_bytes(b"not an npz")
    third = load("usps", "test")
    assert np.array_equal(first.images, third.images)
    assert np.load(npz)["images"].shape == (2007, 1, 16, 16)  # rewritten


def test_image_data_is_frozen_and_validated():
    d = load("sklearn_digits", "all")
    with pytest.raises(AttributeError):
        d.name = "other"
    with pytest.raises(ValueError, match="float32"):
        ImageData(d.images.astype(np.float64), d.labels, d.classes, "x", "all")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ImageData(d.images, d.labels, ("0", "1", "2"), "x", "all")


OMNIGLOT_ZIPS = ("omniglot/images_background_small1.zip", "omniglot/images_background_small2.zip")


def test_omniglot_counts_alphabets_and_drawers():
    d = load("omniglot", "all")
    alphabets = [name.split("/")[0] for name in d.classes]
    assert {a: alphabets.count(a) for a in set(alphabets)} == {
        "Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26,
        "Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}
    assert len(set(d.classes)) == 242 and list(d.classes) == sorted(d.classes)
    assert np.bincount(d.labels).tolist() == [20] * 242  # every character drawn by 20 people
    assert d.classes[0] == "Balinese/character01"
    # Labels group drawings of one character: the mean of 10 drawers finds the other 10's mean.
    halves = d.images.reshape(242, 2, 10, 28 * 28).mean(2)
    halves -= halves.mean(2, keepdims=True)
    halves /= np.linalg.norm(halves, axis=2, keepdims=True)
    assert np.mean(np.argmax(halves[:, 0] @ halves[:, 1].T, 1) == np.arange(242)) > 0.4  # 0.61; chance 1/242


def test_omniglot_shared_alphabets_are_identical_in_both_zips(shared_data):
    import zipfile

    small1, small2 = (zipfile.ZipFile(shared_data / f) for f in OMNIGLOT_ZIPS)
    inner = [{m.split("/", 1)[1]: m for m in z.namelist() if m.endswith(".png")} for z in (small1, small2)]
    common = inner[0].keys() & inner[1].keys()
    assert {name.split("/")[0] for name in common} == {"Greek", "Latin"} and len(common) == 50 * 20
    assert all(small1.read(inner[0][n]) == small2.read(inner[1][n]) for n in common)
    assert len(inner[0]) + len(inner[1]) - len(common) == 4840


def test_omniglot_decoding_white_strokes_at_28(shared_data):
    import zipfile

    from PIL import Image

    d = load("omniglot", "all")
    with zipfile.ZipFile(shared_data / OMNIGLOT_ZIPS[0]) as z:
        first = sorted(m for m in z.namelist() if m.startswith("images_background_small1/Balinese/"
                                                               "character01/") and m.endswith(".png"))[0]
        paper = np.asarray(Image.open(io.BytesIO(z.read(first))))  # True on the white paper
    strokes = resize(torch.from_numpy((~paper).astype(np.float32))[None, None], 28)[0, 0].numpy()
    np.testing.assert_allclose(d.images[0, 0], strokes, atol=0.5 / 255 + 1e-6)
    assert np.median(d.images) == 0.0  # the background is black


@pytest.mark.parametrize("corrupt", [0, 1])
def test_omniglot_checks_both_zips(shared_data, empty_dirs, corrupt):
    data, _ = empty_dirs
    for i, relpath in enumerate(OMNIGLOT_ZIPS):
        _copy(shared_data / relpath, data, relpath, flip_byte=1000 if i == corrupt else None)
    with pytest.raises(DataError, match="checksum mismatch for " + OMNIGLOT_ZIPS[corrupt]):
        load("omniglot", "all")


def test_omniglot_missing_zip_says_what_to_do(shared_data, empty_dirs, monkeypatch):
    data, _ = empty_dirs
    _copy(shared_data / OMNIGLOT_ZIPS[0], data, OMNIGLOT_ZIPS[0])
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.raises(DataError, match=f"{OMNIGLOT_ZIPS[1]} is not in TLCOURSE_DATA .*"
                                        "set TLCOURSE_DATA to a folder that holds it"):
        load("omniglot", "all")


def test_sklearn_digits_scaled_by_16():
    from sklearn.datasets import load_digits

    d = load("sklearn_digits", "all")
    np.testing.assert_allclose(d.images[:, 0] * 16, load_digits().images, atol=1e-5)


# --- resize and to_rgb ---------------------------------------------------------------------------

def test_resize_keeps_constants_and_type():
    x = torch.full((2, 1, 16, 16), 0.25)
    y = resize(x, 28)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 1, 28, 28)
    assert torch.allclose(y, torch.full_like(y, 0.25))
    z = resize(np.ones((1, 3, 32, 32), np.float32), (16, 8))
    assert isinstance(z, np.ndarray) and z.shape == (1, 3, 16, 8)
    with pytest.raises(ValueError, match="floating-point"):
        resize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 8)


def test_to_rgb_repeats_one_channel():
    x = torch.rand(4, 1, 5, 5)
    y = to_rgb(x)
    assert y.shape == (4, 3, 5, 5) and all(torch.equal(y[:, c], x[:, 0]) for c in range(3))
    assert to_rgb(y) is y
    assert to_rgb(x.numpy()).shape == (4, 3, 5, 5)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_rgb(torch.zeros(1, 2, 5, 5))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 3), max_size=6).filter(lambda s: len(s) != 4))
def test_resize_and_to_rgb_reject_non_4d_input(shape):
    x = np.zeros(shape, np.float32)
    for fn in (lambda a: resize(a, 8), to_rgb):
        with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
            fn(x)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 40), st.integers(2, 40), st.integers(0, 2**16))
def test_resize_stays_in_unit_range(height, width, seed):
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
    y = resize(x, (height, width))
    assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6
