from __future__ import annotations

import os
import threading
import uuid

import pytest

from pcbook.pb import filter_message_pb2, memory_message_pb2
from pcbook.service import sample
from pcbook.service.stores import AlreadyExistsError, ImageStore, LaptopStore, RatingStore, UserStore, to_bits

Memory = memory_message_pb2.Memory


def test_laptop_store_keeps_copies() -> None:
    store = LaptopStore()
    laptop = sample.new_laptop()
    store.save(laptop)
    laptop.brand = "changed after save"
    found = store.find(laptop.id)
    assert found is not None and found.brand != "changed after save"
    found.brand = "changed after find"
    assert store.find(laptop.id).brand != "changed after find"
    assert store.find(str(uuid.uuid4())) is None


def test_laptop_store_refuses_duplicates() -> None:
    store = LaptopStore()
    laptop = sample.new_laptop()
    store.save(laptop)
    with pytest.raises(AlreadyExistsError, match="record already exists"):
        store.save(laptop)


def test_laptop_store_concurrent_saves() -> None:
    store = LaptopStore()
    laptops = [sample.new_laptop() for _ in range(200)]
    threads = [threading.Thread(target=store.save, args=(lp,)) for lp in laptops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 200


def test_to_bits() -> None:
    assert to_bits(Memory(value=1, unit=Memory.BIT)) == 1
    assert to_bits(Memory(value=1, unit=Memory.BYTE)) == 8
    assert to_bits(Memory(value=1, unit=Memory.KILOBYTE)) == 8 * 1024
    assert to_bits(Memory(value=8, unit=Memory.GIGABYTE)) == 8 * 8 * 1024**3
    assert to_bits(Memory(value=1, unit=Memory.TERABYTE)) == 8 * 1024**4
    assert to_bits(Memory(value=5, unit=Memory.UNKNOWN)) == 0


def _laptop(price: float, cores: int, ghz: float, ram: Memory):  # type: ignore[no-untyped-def]
    lp = sample.new_laptop()
    lp.price_usd, lp.cpu.number_cores, lp.cpu.min_ghz = price, cores, ghz
    lp.ram.CopyFrom(ram)
    return lp


def test_search_matches_every_bound_inclusively() -> None:
    store = LaptopStore()
    flt = filter_message_pb2.Filter(
        max_price_usd=2000, min_cpu_cores=4, min_cpu_ghz=2.5, min_ram=Memory(value=8, unit=Memory.GIGABYTE)
    )
    good = [
        _laptop(2000, 4, 2.5, Memory(value=8, unit=Memory.GIGABYTE)),  # every bound exactly
        _laptop(1000, 8, 3.0, Memory(value=8192, unit=Memory.MEGABYTE)),  # same RAM in another unit
        _laptop(1999, 6, 2.6, Memory(value=1, unit=Memory.TERABYTE)),
    ]
    bad = [
        _laptop(2001, 8, 3.0, Memory(value=64, unit=Memory.GIGABYTE)),  # too expensive
        _laptop(1500, 2, 3.0, Memory(value=64, unit=Memory.GIGABYTE)),  # too few cores
        _laptop(1500, 8, 2.4, Memory(value=64, unit=Memory.GIGABYTE)),  # too slow
        _laptop(1500, 8, 3.0, Memory(value=8191, unit=Memory.MEGABYTE)),  # a megabyte short
    ]
    for lp in good + bad:
        store.save(lp)
    assert {lp.id for lp in store.search(flt)} == {lp.id for lp in good}


def test_search_stops_when_asked() -> None:
    store = LaptopStore()
    for _ in range(10):
        store.save(_laptop(1, 8, 3, Memory(value=8, unit=Memory.GIGABYTE)))
    flt = filter_message_pb2.Filter(max_price_usd=10)
    calls = []
    found = list(store.search(flt, should_stop=lambda: calls.append(1) or len(calls) > 3))
    assert len(found) == 3
    assert store.checked == 3


def test_rating_store_running_average() -> None:
    store = RatingStore()
    averages = [store.add("a", s).average for s in (8, 7.5, 10)]
    assert averages == [8, 7.75, 8.5]
    assert store.add("b", 3).count == 1


def test_user_store() -> None:
    from pcbook.service.auth import User

    store = UserStore()
    user = User("bob", b"hash", "user")
    store.save(user)
    assert store.find("bob") is user
    assert store.find("alice") is None
    with pytest.raises(AlreadyExistsError):
        store.save(user)


def test_image_store_shared_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Two servers may share one folder: names never collide.
    a, b = ImageStore(tmp_path), ImageStore(tmp_path)
    ids = {a.save("lp", ".jpg", b"x" * 10), b.save("lp", ".jpg", b"y" * 10), a.save("lp", ".png", b"z")}
    assert len(ids) == 3 and len(list(tmp_path.iterdir())) == 3
    info = next(i for i in map(a.find, ids) if i is not None and i.image_type == ".png")
    assert info.path.read_bytes() == b"z" and info.path.parent == tmp_path


def test_image_store_ignores_unsafe_types(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ImageStore(tmp_path)
    image_id = store.save("lp", "/../../etc/passwd", b"data")
    assert store.find(image_id).path == tmp_path / image_id


def test_image_store_default_is_in_the_run_folder_and_killed_servers_folders_go(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from pcbook import paths

    monkeypatch.setattr(paths, "RUN_DIR", tmp_path / "run")
    # A server that was killed (SIGKILL: no atexit) left its folder behind.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "run" / "images" / f"server-{int(dead.stdout)}-abc"
    stale.mkdir(parents=True)
    (stale / "img.jpg").write_bytes(b"x")
    alive = tmp_path / "run" / "images" / f"server-{os.getppid()}-def"  # a server still running keeps its own
    alive.mkdir()
    store = ImageStore()
    assert store.folder.is_dir() and store.folder.parent == tmp_path / "run" / "images"
    assert not stale.exists() and alive.exists()
