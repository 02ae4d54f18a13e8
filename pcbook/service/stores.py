"""The server's stores: laptops, ratings and users in memory, images on disk. All thread-safe."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pcbook import paths
from pcbook.pb import filter_message_pb2, laptop_message_pb2, memory_message_pb2

if TYPE_CHECKING:
    from pcbook.service.auth import User

Laptop = laptop_message_pb2.Laptop
Filter = filter_message_pb2.Filter
Memory = memory_message_pb2.Memory


class AlreadyExistsError(Exception):
    """Raised when saving a record whose id is taken (Go's ErrAlreadyExists)."""

    def __init__(self) -> None:
        super().__init__("record already exists")


def _copy(laptop: Laptop) -> Laptop:
    # Callers get their own copy: mutating it must never change what other RPCs see.
    clone = Laptop()
    clone.CopyFrom(laptop)
    return clone


# Memory.Unit -> shift to bits (1 byte = 2**3 bits, 1 KB = 2**13 bits, ...), as the Go service does.
_BIT_SHIFT = {
    Memory.BIT: 0,
    Memory.BYTE: 3,
    Memory.KILOBYTE: 13,
    Memory.MEGABYTE: 23,
    Memory.GIGABYTE: 33,
    Memory.TERABYTE: 43,
}


def to_bits(memory: Memory) -> int:
    """The size of ``memory`` in bits; an UNKNOWN unit counts as 0."""
    shift = _BIT_SHIFT.get(memory.unit)
    return 0 if shift is None else memory.value << shift


def is_qualified(flt: Filter, laptop: Laptop) -> bool:
    """Every bound of the filter is inclusive; an unset max price matches nothing, as in Go."""
    return (
        laptop.price_usd <= flt.max_price_usd
        and laptop.cpu.number_cores >= flt.min_cpu_cores
        and laptop.cpu.min_ghz >= flt.min_cpu_ghz
        and to_bits(laptop.ram) >= to_bits(flt.min_ram)
    )


class LaptopStore:
    """Laptops by id, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Laptop] = {}
        self.checked = 0  # laptops examined by searches: lets tests see that a search stopped

    def save(self, laptop: Laptop) -> None:
        """Store a copy; raise AlreadyExistsError if the id is taken."""
        with self._lock:
            if laptop.id in self._data:
                raise AlreadyExistsError()
            self._data[laptop.id] = _copy(laptop)

    def find(self, laptop_id: str) -> Laptop | None:
        with self._lock:
            laptop = self._data.get(laptop_id)
        return None if laptop is None else _copy(laptop)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def search(self, flt: Filter, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Laptop]:
        """Yield copies of the laptops matching ``flt``; stop as soon as ``should_stop()`` is true.

        Works on a snapshot, so a slow consumer never holds the lock (stored laptops are never
        mutated in place: save() stores a copy and find() returns one).
        """
        with self._lock:
            snapshot = list(self._data.values())
        for laptop in snapshot:
            if should_stop():
                return
            with self._lock:
                self.checked += 1
            if is_qualified(flt, laptop):
                yield _copy(laptop)


@dataclass(frozen=True)
class Rating:
    count: int
    average: float


def next_average(old: Rating, score: float) -> Rating:
    """The running mean, kept as a mean rather than a sum: a sum of two finite scores near the float
    maximum (1e308 twice) is infinite, and stays so; avg - avg/n + score/n never leaves the range of
    the scores."""
    n = old.count + 1
    return Rating(n, old.average - old.average / n + score / n)


class RatingStore:
    """Running count and sum of the scores of each laptop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Rating] = {}

    def add(self, laptop_id: str, score: float) -> Rating:
        with self._lock:
            new = next_average(self._data.get(laptop_id, Rating(0, 0.0)), score)
            self._data[laptop_id] = new
            return new


class UserStore:
    """Users by username, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, User] = {}

    def save(self, user: User) -> None:
        with self._lock:
            if user.username in self._data:
                raise AlreadyExistsError()
            self._data[user.username] = user  # User is immutable: no copy needed

    def find(self, username: str) -> User | None:
        with self._lock:
            return self._data.get(username)


def _remove_stale(parent: Path) -> None:
    """Delete the image folders of servers that are no longer running (killed: no atexit ran)."""
    for folder in parent.glob("server-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
            os.kill(pid, 0)
            continue  # still running (or a pid we may not signal: someone else's, leave it)
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ImageInfo:
    laptop_id: str
    image_type: str
    path: Path


class ImageStore:
    """Images as files named ``<uuid><type>`` in a folder outside the source tree.

    Two servers can share one folder: names are fresh UUIDs and files are created exclusively.
    Without a folder, each process gets its own, RUN_DIR/images/server-<pid>-..., removed at exit;
    a server that was killed cannot remove its own, so each start removes those of dead servers.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        if folder is None:
            parent = paths.RUN_DIR / "images"
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(parent)
            self.folder = Path(tempfile.mkdtemp(prefix=f"server-{os.getpid()}-", dir=parent))
            atexit.register(shutil.rmtree, self.folder, ignore_errors=True)
        else:
            self.folder = Path(folder)
            self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._data: dict[str, ImageInfo] = {}

    def save(self, laptop_id: str, image_type: str, data: bytes) -> str:
        """Write the image and return its new id."""
        image_id = str(uuid.uuid4())
        # The type comes from the client: keep only a short, harmless suffix such as ".jpg" (a long one
        # would make the name too long for the file system).
        suffix = image_type if image_type.startswith(".") and image_type[1:].isalnum() and len(image_type) <= 16 \
            and image_type.isascii() else ""
        path = self.folder / f"{image_id}{suffix}"
        with open(path, "xb") as f:
            f.write(data)
        with self._lock:
            self._data[image_id] = ImageInfo(laptop_id, image_type, path)
        return image_id

    def find(self, image_id: str) -> ImageInfo | None:
        with self._lock:
            return self._data.get(image_id)
