"""One door to data: every file the course reads, with its upstream URL and SHA-256.

:func:`fetch_file` returns a verified local copy of a registered file, looking in this order:

1. the folder named by the environment variable ``TLCOURSE_DATA`` (CI and the tests point it at
   ``../shared/data`` beside the repository);
2. the user cache, ``$TLCOURSE_CACHE/data`` when ``TLCOURSE_CACHE`` is set, else
   ``~/.cache/tlcourse/data``;
3. the upstream URL (a pinned GitHub commit), downloaded into the cache.

Whatever it returns has the SHA-256 recorded in :data:`REGISTRY`; anything else raises
:class:`DataError` with one sentence saying what happened and what to do. Environment variables
are read at every call, never at import.

:func:`load` decodes a dataset by name into an :class:`ImageData` of float32 images (N, C, H, W)
in [0, 1] and int64 labels (N,). Decoded arrays are kept as ``.npz`` files in
``<cache>/decoded``, named after the SHA-256 of their source files, so a second load is fast.

>>> digits = load("sklearn_digits", split="all")
>>> digits
ImageData(name='sklearn_digits', split='all', images=(1797, 1, 8, 8) float32, labels=(1797,) int64, classes=10)
>>> x, y = digits.to_tensors()
>>> tuple(resize(to_rgb(x[:4]), 32).shape)
(4, 3, 32, 32)
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DataError", "DataFile", "REGISTRY", "ImageData", "TextData",
    "fetch_file", "load", "load_text", "holdout_split", "datasets", "text_datasets", "data_dirs",
    "resize", "to_rgb",
]


class DataError(RuntimeError):
    """A registered file is missing, cannot be downloaded, or has the wrong checksum."""


@dataclass(frozen=True)
class DataFile:
    """Where a registered file comes from: its upstream ``url`` (``None`` when the file was
    assembled locally and has no single upstream copy), its ``sha256``, and a ``source`` note."""

    url: str | None
    sha256: str
    source: str = ""


# Where each local folder comes from upstream: (GitHub repository, commit, folder in that repository).
_ORIGINS = {
    "mnist": ("kelas/mnist", "283b387221ab46655e600cfcc25d843bb14292b9", ""),
    "emnist_mnist": ("0r4nd/emnist-packed", "0f121efc", "emnist-mnist/"),
    "emnist_letters": ("0r4nd/emnist-packed", "0f121efc", "emnist-letters/"),
    "usps": ("niuers/Learning-From-Data-A-Short-Course", "879a698b", "data/"),
    "mnist_m": ("joffery/M-ADA", "44ddcbeb", "data/mnist_m/"),
    "resnet_cifar10": ("akamaster/pytorch_resnet_cifar10", "d5489e8", "pretrained_models/"),
    "imagenet_classes": ("pytorch/hub", "c7895df7", ""),
    "omniglot": ("brendenlake/omniglot", "057f034", "python/"),
    "agnews": ("forest-snow/alps", "3c7ef2c9", "data/agnews/"),
    "sst2": ("forest-snow/alps", "3c7ef2c9", "data/SST-2/"),
}
# The 9,001 PNGs live one by one upstream; this zip of them was made for the course.
_LOCAL_ONLY = {"mnist_m/mnist_m_test_png.zip":
               "zipped from https://github.com/joffery/M-ADA/tree/44ddcbeb/data/mnist_m/mnist_m_test"}
# Copied from the SHA256SUMS of the shared data folder (same format).
_SHA256SUMS = """
167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b  mnist/t10k-images-idx3-ubyte.gz
fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c  mnist/t10k-labels-idx1-ubyte.gz
fb6a69dd015547f7104b311d16941bec702b24275bd2c81de0c42522ade160ba  emnist_mnist/X_test_0_to_9999.webp
b8189a3d4f1368e50865dcf2d4418e41d0028feffd793711a76d098948507cdd  emnist_mnist/test.json
47e828f036b672ac99275c9015f0864fcd2d833acdec05a82a2449fdcb8b3da2  emnist_letters/X_test_0_to_14399.webp
6dc357b88c2b4ba8813f4a116d15f367a51662c6b54b3612c33907b59d82a7c0  emnist_letters/X_test_14400_to_14799.webp
489986b97ba87b4814ef598d29467c71e87597ee733273b2f7a97622e72b05d0  emnist_letters/test.json
734f88c541104a956d88be2c95d03b4a463ffd74ccc2ba9c80841fb98e3fcb36  usps/usps.h5
56ac89e9c75e9837c73f97fb5aaf36c7a3f6edcd866cf9b0b0f5a50f1f7e0222  mnist_m/mnist_m_test_png.zip
2e8124bc2a92b483930141f677e09cb1c5a3fe99504e05fe59877d92766d7d61  mnist_m/mnist_m_test_labels.txt
12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8  resnet_cifar10/resnet20-12fca82f.th
d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850  resnet_cifar10/resnet32-d509ac18.th
014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4  resnet_cifar10/resnet44-014dd654.th
4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367  resnet_cifar10/resnet56-4bfd9763.th
1f386e0d1cb6e28b9c2dac651c3dea6801e98ad1b41a14ce6bb1a093d72069f5  imagenet_classes/imagenet_classes.txt
f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4  omniglot/images_background_small1.zip
3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f  omniglot/images_background_small2.zip
7a0811e0006080bf4de17752c5466450ff3db778be71bc5bcf3c4e99b5f0803d  agnews/dev.tsv
e4217edd939f618f24a42b0988c56ec3cddf656d8dc279b9afa443dd1ab6a1c1  agnews/test.tsv
920e317b2c52e12cd22db1da2c6708312bd7dc4f3712b9bbf1b50ee6c2c792ba  sst2/train.tsv
92353770071a2a889f75d000a38a9e541ea8f0a5499e50f040b17917a5cbf66f  sst2/dev.tsv
54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0  sst2/test.tsv
"""


def _registry_entry(relpath: str, sha256: str) -> DataFile:
    if relpath in _LOCAL_ONLY:
        return DataFile(None, sha256, _LOCAL_ONLY[relpath])
    folder, name = relpath.split("/", 1)
    repo, commit, upstream = _ORIGINS[folder]
    return DataFile(f"https://raw.githubusercontent.com/{repo}/{commit}/{upstream}{name}", sha256,
                    f"{repo}@{commit}:{upstream}{name}")


#: Every file the course reads, keyed by its path relative to a data folder.
REGISTRY: Mapping[str, DataFile] = MappingProxyType({
    relpath: _registry_entry(relpath, sha256)
    for sha256, relpath in (line.split() for line in _SHA256SUMS.strip().splitlines())
})


def _cache_root() -> Path:
    root = os.environ.get("TLCOURSE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tlcourse"


def _data_env() -> Path | None:
    folder = os.environ.get("TLCOURSE_DATA")
    return Path(folder).expanduser() if folder else None


def data_dirs() -> list[Path]:
    """The folders :func:`fetch_file` searches, in order: ``TLCOURSE_DATA`` (when set), then the cache.

    >>> data_dirs()[-1].name
    'data'
    """
    env = _data_env()
    return ([env] if env is not None else []) + [_cache_root() / "data"]


# SHA-256 of files already hashed in this process, keyed by (path, size, mtime), so that a 20 MB
# zip is not rehashed on every call; a changed file gets a new key and is hashed again.
_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _verified(path: Path, relpath: str, entry: DataFile) -> Path:
    actual = _sha256(path)
    if actual != entry.sha256:
        raise DataError(
            f"checksum mismatch for {relpath} at {path}: expected SHA-256 {entry.sha256} but got "
            f"{actual}, so the copy is corrupt or changed; delete it (or replace it with a good "
            "copy) and call again to re-download it.")
    return path


def fetch_file(relpath: str) -> Path:
    """Return the local path of a registered file after checking its SHA-256.

    Looks in ``TLCOURSE_DATA``, then the user cache, then downloads ``REGISTRY[relpath].url`` into
    the cache (to a temporary file, moved into place only once its length and checksum match).
    Raises ``ValueError`` for a path that is not in :data:`REGISTRY`, and :class:`DataError` when
    the file is corrupt, truncated, or cannot be found or downloaded.

    >>> REGISTRY["mnist/t10k-labels-idx1-ubyte.gz"].sha256[:12]
    'fc607395669e'
    >>> fetch_file("mnist/train-images-idx3-ubyte.gz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: unknown data file 'mnist/train-images-idx3-ubyte.gz'; known files: ...
    """
    relpath = Path(relpath).as_posix()
    if relpath not in REGISTRY:
        raise ValueError(f"unknown data file {relpath!r}; known files: {', '.join(REGISTRY)}")
    entry = REGISTRY[relpath]
    env = _data_env()
    if env is not None and (env / relpath).is_file():
        return _verified(env / relpath, relpath, entry)
    cached = _cache_root() / "data" / relpath
    if cached.is_file():
        return _verified(cached, relpath, entry)
    where = (f"{relpath} is not in TLCOURSE_DATA ({env if env is not None else 'not set'}) "
             f"or the cache ({cached.parent})")
    if entry.url is None:
        raise DataError(f"{where} and has no single upstream file to download ({entry.source}); "
                        "set TLCOURSE_DATA to a folder that holds it.")
    return _download(relpath, entry, cached, where)


def _download(relpath: str, entry: DataFile, dest: Path, where: str) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the cache folder {dest.parent} ({err}); "
                        "set TLCOURSE_CACHE to a writable folder.") from err
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, received, expected = hashlib.sha256(), 0, None
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as resp:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length is not None else None
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
        except http.client.IncompleteRead as err:
            received += len(err.partial)
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
            raise DataError(f"{where} and could not be downloaded from {entry.url} ({err}); set "
                            "TLCOURSE_DATA to a folder that holds it or connect to the internet."
                            ) from err
        if expected is not None and received != expected:
            raise DataError(f"download of {relpath} from {entry.url} was truncated: received "
                            f"{received} of {expected} bytes; check the connection and try again.")
        if digest.hexdigest() != entry.sha256:
            raise DataError(
                f"checksum mismatch for {relpath} downloaded from {entry.url}: expected SHA-256 "
                f"{entry.sha256} but got {digest.hexdigest()}; nothing was saved, so check the "
                "URL in REGISTRY and try again.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return _verified(dest, relpath, entry)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image set: ``images`` float32 (N, C, H, W) in [0, 1], ``labels`` int64 (N,)
    with values in ``range(len(classes))``; ``classes[k]`` names label k.

    >>> d = load("sklearn_digits", split="all")
    >>> len(d), d.classes[:3], float(d.images.max())
    (1797, ('0', '1', '2'), 1.0)
    """

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    name: str
    split: str

    def __post_init__(self):
        n = len(self.labels)
        if self.images.ndim != 4 or self.images.dtype != np.float32 or len(self.images) != n:
            raise ValueError(f"images must be float32 of shape (N, C, H, W) with N = {n} "
                             f"labels, got {self.images.dtype} {self.images.shape}")
        if self.labels.ndim != 1 or self.labels.dtype != np.int64:
            raise ValueError(f"labels must be int64 of shape (N,), got {self.labels.dtype} "
                             f"{self.labels.shape}")
        if n and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got "
                             f"[{self.labels.min()}, {self.labels.max()}]")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, split={self.split!r}, images={self.images.shape} "
                f"{self.images.dtype}, labels={self.labels.shape} {self.labels.dtype}, "
                f"classes={len(self.classes)})")

    def to_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) as a float32 and an int64 tensor that share memory with the arrays."""
        return torch.from_numpy(self.images), torch.from_numpy(self.labels)


# Decoders return (images (N, C, H, W) as uint8 or float in [0, 1], labels (N,)) from verified files.
def _decode_mnist(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    images = np.frombuffer(gzip.decompress(paths[0].read_bytes()), np.uint8, offset=16)
    labels = np.frombuffer(gzip.decompress(paths[1].read_bytes()), np.uint8, offset=8)
    return images.reshape(-1, 1, 28, 28), labels


def _decode_emnist(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    meta = json.loads(paths[-1].read_bytes())
    size = meta["height"]
    tiles = []
    # Sprite sheets of size x size tiles in row-major order. Raw EMNIST is stored transposed, but
    # this packer already turned the tiles upright (tests/test_data.py checks against MNIST).
    for sheet in paths[:-1]:
        pixels = np.asarray(Image.open(sheet).convert("L"))
        rows, cols = pixels.shape[0] // size, pixels.shape[1] // size
        tiles.append(pixels.reshape(rows, size, cols, size).swapaxes(1, 2).reshape(-1, size, size))
    labels = np.asarray(meta["id"])
    if meta["mapping"][0] == ord("A"):  # EMNIST numbers letters from 1 (A); digits from 0
        labels = labels - 1
    return np.concatenate(tiles)[: len(labels), None], labels


def _decode_usps(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    with h5py.File(paths[0], "r") as f:  # /train and /test, each with data (N, 256) and target
        return f[split]["data"][:].reshape(-1, 1, 16, 16), f[split]["target"][:]


def _decode_mnist_m(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    # Each line reads "00000000.png 7"; line i is MNIST test image i on a BSDS background.
    rows = [line.split() for line in paths[1].read_text().splitlines() if line]
    with zipfile.ZipFile(paths[0]) as z:
        images = np.stack([np.asarray(Image.open(io.BytesIO(z.read(f"mnist_m_test/{png}"))))
                           for png, _ in rows])
    return images.transpose(0, 3, 1, 2), np.array([int(label) for _, label in rows])


def _omniglot_members(paths: list[Path]) -> dict[tuple[str, str], list[tuple[Path, str]]]:
    """Each distinct (alphabet, character) with its drawings as (zip path, member name), sorted.

    The zips hold ``<folder>/<alphabet>/<character>/<image id>_<drawer>.png``. Greek and Latin sit
    in both small zips under the same names with byte-identical PNGs (tests/test_data.py checks it
    on the registered bytes), so the first copy of each name is kept.
    """
    drawings: dict[tuple[str, str], dict[str, tuple[Path, str]]] = {}
    for path in paths:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                parts = member.split("/")
                if len(parts) == 4 and parts[3].endswith(".png"):
                    drawings.setdefault((parts[1], parts[2]), {}).setdefault(parts[3], (path, member))
    return {key: [drawings[key][png] for png in sorted(drawings[key])] for key in sorted(drawings)}


def _omniglot_classes(paths: list[Path]) -> tuple[str, ...]:
    return tuple(f"{alphabet}/{character}" for alphabet, character in _omniglot_members(paths))


def _decode_omniglot(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    members = _omniglot_members(paths)
    zips = {path: zipfile.ZipFile(path) for path in paths}
    try:
        # Mode "1" PNGs: True is the white paper. Invert so strokes are 1 on 0, as in MNIST.
        strokes = np.stack([~np.asarray(Image.open(io.BytesIO(zips[path].read(member))).convert("1"))
                            for drawings in members.values() for path, member in drawings])
    finally:
        for z in zips.values():
            z.close()
    labels = np.repeat(np.arange(len(members)), [len(d) for d in members.values()])
    small = resize(torch.from_numpy(strokes[:, None].astype(np.float32)), _OMNIGLOT_SIZE).numpy()
    return np.round(np.clip(small, 0.0, 1.0) * 255).astype(np.uint8), labels


def _decode_sklearn_digits(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0)[:, None], digits.target


@dataclass(frozen=True)
class _Dataset:
    splits: tuple[str, ...]
    files: tuple[str, ...]
    classes: tuple[str, ...] | Callable[[list[Path]], tuple[str, ...]]  # or read from the files
    decode: Callable[[list[Path], str], tuple[np.ndarray, np.ndarray]]
    unavailable: Mapping[str, str] = field(default_factory=dict)


_DIGITS = tuple("0123456789")
_DATASETS: dict[str, _Dataset] = {
    "mnist": _Dataset(("test",), ("mnist/t10k-images-idx3-ubyte.gz",
                                  "mnist/t10k-labels-idx1-ubyte.gz"), _DIGITS, _decode_mnist,
                      {"train": "the MNIST train images are not in the offline data (no public "
                                "snapshot holds the 9.9 MB file), so only split='test' is available"}),
    "emnist_digits": _Dataset(("test",), ("emnist_mnist/X_test_0_to_9999.webp",
                                          "emnist_mnist/test.json"), _DIGITS, _decode_emnist),
    "emnist_letters": _Dataset(("test",), ("emnist_letters/X_test_0_to_14399.webp",
                                           "emnist_letters/X_test_14400_to_14799.webp",
                                           "emnist_letters/test.json"),
                               tuple("ABCDEFGHIJKLMNOPQRS"), _decode_emnist),
    "usps": _Dataset(("train", "test"), ("usps/usps.h5",), _DIGITS, _decode_usps),
    "mnist_m": _Dataset(("test",), ("mnist_m/mnist_m_test_png.zip",
                                    "mnist_m/mnist_m_test_labels.txt"), _DIGITS, _decode_mnist_m),
    "sklearn_digits": _Dataset(("all",), (), _DIGITS, _decode_sklearn_digits),
    "omniglot": _Dataset(("all",), ("omniglot/images_background_small1.zip",
                                    "omniglot/images_background_small2.zip"),
                         _omniglot_classes, _decode_omniglot),
}
_OMNIGLOT_SIZE = 28  # Vinyals et al. (2016) and Snell et al. (2017) shrink the 105x105 drawings to 28x28
_DECODER_VERSION = "1"  # bump when a decoder changes, so stale .npz caches are not reused


def datasets() -> dict[str, tuple[str, ...]]:
    """Names that :func:`load` knows, each with its splits.

    >>> datasets()["usps"]
    ('train', 'test')
    """
    return {name: spec.splits for name, spec in _DATASETS.items()}


def load(name: str, split: str = "test") -> ImageData:
    """Load a labelled image dataset by name; images float32 (N, C, H, W) in [0, 1], labels int64.

    ===============  ==========  ======  =========  ===========================================
    name             split       N       C x H x W  source
    ===============  ==========  ======  =========  ===========================================
    mnist            test        10000   1x28x28    LeCun et al. (1998)
    emnist_digits    test        10000   1x28x28    EMNIST-MNIST, Cohen et al. (2017)
    emnist_letters   test        14800   1x28x28    EMNIST letters A-S only (labels 0..18)
    usps             train/test  7291/   1x16x16    Hull (1994)
                                 2007
    mnist_m          test        9001    3x32x32    Ganin & Lempitsky (2015); item i is MNIST i
    sklearn_digits   all         1797    1x8x8      UCI digits via scikit-learn, scaled by 1/16
    omniglot         all         4840    1x28x28    Lake et al. (2015), 242 characters x 20
    ===============  ==========  ======  =========  ===========================================

    All digits are white on black and upright, as in MNIST.

    **omniglot** (Lake, Salakhutdinov & Tenenbaum, 2015, "Human-level concept learning through
    probabilistic program induction", Science) is read from the two "small" background zips of
    the authors' repository: 8 distinct alphabets and 242 distinct characters, each drawn once by
    20 people (small1 holds 5 alphabets / 136 characters, small2 5 / 156; Greek (24 characters)
    and Latin (26) are in both, with identical files, and are kept once). The 105x105 black-on-white
    drawings are inverted to white strokes on black and shrunk to 28x28 with antialiased
    bilinear interpolation (:func:`resize`), then stored as multiples of 1/255. Label ``k`` is a
    character; ``classes[k]`` is ``"<alphabet>/<character>"`` (e.g. ``"Greek/character01"``), in
    sorted order, so ``classes[k].split("/")[0]`` is its alphabet: split characters by alphabet
    with :func:`tlcourse.meta.episodes.split_by_alphabet`.

    Raises ``ValueError`` for an unknown name or split and :class:`DataError` when a source file
    is missing or corrupt.

    >>> load("omniglot", "all").classes[23:25]
    ('Balinese/character24', 'Early_Aramaic/character01')
    >>> load("usps", split="validation")
    Traceback (most recent call last):
    ValueError: usps has no split 'validation'; its splits are ('train', 'test')
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_DATASETS)}")
    spec = _DATASETS[name]
    if split in spec.unavailable:
        raise ValueError(f"{name} split {split!r} is not available: {spec.unavailable[split]}")
    if split not in spec.splits:
        raise ValueError(f"{name} has no split {split!r}; its splits are {spec.splits}")
    images, labels = _decoded(name, split, spec)
    if images.dtype == np.uint8:
        images = np.divide(images, 255, dtype=np.float32)
    classes = spec.classes([fetch_file(f) for f in spec.files]) if callable(spec.classes) \
        else spec.classes
    return ImageData(np.ascontiguousarray(images, dtype=np.float32), labels.astype(np.int64),
                     classes, name, split)


def holdout_split(name: str, n_test: int, seed: int = 0, split: str = "test"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_pool, y_pool, x_test, y_test)``: a fixed train-pool / test split of a dataset.

    The images of ``load(name, split)`` are shuffled with
    ``np.random.default_rng(seed).permutation``; the last ``n_test`` of them are the test set and
    the others the pool that training subsets are drawn from. An exercise and its grader both
    call this function, so the test split a student reports on is the one the grader scores
    (exercise T01: ``holdout_split("emnist_letters", n_test=1900, seed=0)``).

    >>> x_pool, y_pool, x_test, y_test = holdout_split("sklearn_digits", 297, split="all")
    >>> len(y_pool), tuple(x_test.shape)
    (1500, (297, 1, 8, 8))
    """
    images = load(name, split)
    if not isinstance(n_test, (int, np.integer)) or not 0 < n_test < len(images):
        raise ValueError(f"n_test must be an integer in [1, {len(images) - 1}] for {name} "
                         f"{split} ({len(images)} images), got {n_test!r}")
    x, y = images.to_tensors()
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    pool, test = order[:-n_test], order[-n_test:]
    return x[pool], y[pool], x[test], y[test]


def _decoded(name: str, split: str, spec: _Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Decode the source files, or reuse the ``.npz`` made earlier from the same bytes."""
    paths = [fetch_file(f) for f in spec.files]
    if not paths:
        return spec.decode(paths, split)
    key = hashlib.sha256(" ".join([_DECODER_VERSION, *(REGISTRY[f].sha256 for f in spec.files)])
                         .encode()).hexdigest()[:16]
    cache = _cache_root() / "decoded" / f"{name}-{split}-{key}.npz"
    try:
        with np.load(cache) as saved:
            return saved["images"], saved["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # absent or unreadable: decode again and rewrite it
    images, labels = spec.decode(paths, split)
    try:  # the cache only saves time: a read-only or full cache folder must not stop a load
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".part")
    except OSError:
        return images, labels
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels)
        os.replace(tmp, cache)
    except OSError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return images, labels


def _check_batch(images, what: str) -> None:
    if not isinstance(images, (torch.Tensor, np.ndarray)) or images.ndim != 4:
        shape = tuple(getattr(images, "shape", ())) or type(images).__name__
        raise ValueError(f"{what} needs a batch of shape (N, C, H, W), got {shape}")


def resize(images, size: int | tuple[int, int]):
    """Resize a batch (N, C, H, W) to (N, C, *size) with antialiased bilinear interpolation.

    Takes and returns a float torch tensor or NumPy array; values stay within the input's range,
    so [0, 1] images stay in [0, 1]. Used to move between domains, e.g. USPS 16x16 to MNIST 28x28.

    >>> tuple(resize(torch.rand(2, 1, 16, 16), 28).shape)
    (2, 1, 28, 28)
    """
    _check_batch(images, "resize")
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    if not x.is_floating_point():
        raise ValueError(f"resize needs floating-point images, got {x.dtype}")
    size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(size)
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.numpy() if isinstance(images, np.ndarray) else out


def to_rgb(images):
    """Repeat a one-channel batch (N, 1, H, W) into three channels (N, 3, H, W).

    A three-channel batch is returned unchanged; works on torch tensors and NumPy arrays.

    >>> tuple(to_rgb(torch.zeros(5, 1, 28, 28)).shape)
    (5, 3, 28, 28)
    """
    _check_batch(images, "to_rgb")
    if images.shape[1] == 3:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"to_rgb needs 1 or 3 channels, got {images.shape[1]}")
    if isinstance(images, np.ndarray):
        return np.repeat(images, 3, axis=1)
    return images.repeat(1, 3, 1, 1)


# --------------------------------------------------------------------------- text
@dataclass(frozen=True, eq=False)
class TextData:
    """A labelled text set: ``texts`` (N strings), ``labels`` int64 (N,) in ``range(len(classes))``;
    ``classes[k]`` names label k.

    >>> d = TextData(("good", "bad"), np.array([1, 0]), ("negative", "positive"), "toy", "test")
    >>> d, d.classes[d.labels[0]]
    (TextData(name='toy', split='test', texts=2, classes=2), 'positive')
    """

    texts: tuple[str, ...] = field(repr=False)
    labels: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    name: str
    split: str

    def __post_init__(self):
        if not isinstance(self.texts, tuple) or not all(isinstance(t, str) for t in self.texts):
            raise ValueError("texts must be a tuple of strings")
        n = len(self.texts)
        if self.labels.ndim != 1 or self.labels.dtype != np.int64 or len(self.labels) != n:
            raise ValueError(f"labels must be int64 of shape ({n},), one per text, got "
                             f"{self.labels.dtype} {self.labels.shape}")
        if n and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got "
                             f"[{self.labels.min()}, {self.labels.max()}]")

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (f"TextData(name={self.name!r}, split={self.split!r}, texts={len(self.texts)}, "
                f"classes={len(self.classes)})")


def _read_tsv(path: Path, header: bool) -> list[tuple[str, str]]:
    """Rows ``(text, label)`` of a two-column file split on tabs only: no quoting, so a quote
    character inside a sentence stays a character (csv.QUOTE_NONE)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = [line.rsplit("\t", 1) for line in lines[1 if header else 0:] if line.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) != 2), None)
    if bad is not None:
        raise DataError(f"{path} line {bad + 1 + header} does not have two tab-separated columns; "
                        "the file is not the registered one: delete it and call again.")
    return [(text, label) for text, label in rows]


_AGNEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")   # the usual label order 1..4


def _decode_agnews(path: Path) -> tuple[list[str], list[int]]:
    rows = _read_tsv(path, header=False)
    # The AG corpus writes a line break inside an article as a backslash ("second\\team").
    texts = [" ".join(text.replace("\\", " ").split()) for text, _ in rows]
    return texts, [_AGNEWS_CLASSES.index(label) for _, label in rows]


def _decode_sst2(path: Path) -> tuple[list[str], list[int]]:
    rows = _read_tsv(path, header=True)
    return [text.strip() for text, _ in rows], [int(label) for _, label in rows]


@dataclass(frozen=True)
class _TextDataset:
    files: Mapping[str, str]                       # split -> registered file
    classes: tuple[str, ...]
    decode: Callable[[Path], tuple[list[str], list[int]]]
    unavailable: Mapping[str, str] = field(default_factory=dict)


_TEXT_DATASETS: dict[str, _TextDataset] = {
    "agnews": _TextDataset({"dev": "agnews/dev.tsv", "test": "agnews/test.tsv"}, _AGNEWS_CLASSES,
                           _decode_agnews,
                           {"train": "the AG News train file (over 4 MiB) is not in the offline data, "
                                     "so only split='dev' (10,001) and split='test' (7,600) are available"}),
    "sst2": _TextDataset({"train": "sst2/train.tsv", "dev": "sst2/dev.tsv", "test": "sst2/test.tsv"},
                         ("negative", "positive"), _decode_sst2),
}


def text_datasets() -> dict[str, tuple[str, ...]]:
    """Names that :func:`load_text` knows, each with its splits.

    >>> text_datasets()["sst2"]
    ('train', 'dev', 'test')
    """
    return {name: tuple(spec.files) for name, spec in _TEXT_DATASETS.items()}


def load_text(name: str, split: str = "test", n: int | None = None, seed: int = 0) -> TextData:
    """Load a labelled text dataset by name (files SHA-256 checked by :func:`fetch_file`).

    ======  ===============  ==================  =====================================================
    name    split            N                   classes
    ======  ===============  ==================  =====================================================
    agnews  dev / test       10,001 / 7,600      World, Sports, Business, Sci/Tech (Zhang et al., 2015)
    sst2    train/dev/test   60,614/6,735/872    negative, positive (Socher et al., 2013)
    ======  ===============  ==================  =====================================================

    Both come from the ``forest-snow/alps`` repository. AG News: news articles (the description
    field), each backslash, the corpus's line break, turned into a space. SST-2: the GLUE
    sentences, lower-cased and tokenised as distributed; its ``dev`` was split out of GLUE's
    train set and its ``test`` is GLUE's labelled dev set. Files are split on tabs only (no
    quoting). ``n`` keeps a random subset of ``n`` items, the first ``n`` of
    ``np.random.default_rng(seed).permutation(N)``, so a notebook and its grader draw the same.

    Raises ``ValueError`` for an unknown name, split or ``n`` and :class:`DataError` when a file is
    missing or corrupt.

    >>> news = load_text("agnews", "test", n=4, seed=0)
    >>> news, news.classes
    (TextData(name='agnews', split='test', texts=4, classes=4), ('World', 'Sports', 'Business', 'Sci/Tech'))
    >>> load_text("agnews", "train")
    Traceback (most recent call last):
    ValueError: agnews split 'train' is not available: the AG News train file (over 4 MiB) is not in the offline data, so only split='dev' (10,001) and split='test' (7,600) are available
    """
    if name not in _TEXT_DATASETS:
        raise ValueError(f"unknown text dataset {name!r}; known text datasets: {', '.join(_TEXT_DATASETS)}")
    spec = _TEXT_DATASETS[name]
    if split in spec.unavailable:
        raise ValueError(f"{name} split {split!r} is not available: {spec.unavailable[split]}")
    if split not in spec.files:
        raise ValueError(f"{name} has no split {split!r}; its splits are {tuple(spec.files)}")
    texts, labels = spec.decode(fetch_file(spec.files[split]))
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= len(texts):
            raise ValueError(f"n must be an integer in [1, {len(texts)}] for {name} {split} "
                             f"({len(texts)} texts), got {n!r}")
        keep = np.random.default_rng(seed).permutation(len(texts))[:n]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return TextData(tuple(texts), np.asarray(labels, dtype=np.int64), spec.classes, name, split)
