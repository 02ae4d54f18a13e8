"""Random sample laptops, with the same ranges as the Go service's sample package."""

from __future__ import annotations

import random
import uuid

from google.protobuf import timestamp_pb2

from pcbook.pb import (
    keyboard_message_pb2,
    laptop_message_pb2,
    memory_message_pb2,
    processor_message_pb2,
    screen_message_pb2,
    storage_message_pb2,
)

Memory = memory_message_pb2.Memory
Storage = storage_message_pb2.Storage
Screen = screen_message_pb2.Screen
Keyboard = keyboard_message_pb2.Keyboard

# Shared generator; pass your own random.Random(seed) for reproducible samples.
_RNG = random.Random()

_LAPTOP_NAMES = {
    "Apple": ("Macbook Air", "Macbook Pro"),
    "Dell": ("Latitude", "Vostro", "XPS", "Alienware"),
    "Lenovo": ("Thinkpad X1", "Thinkpad P1", "Thinkpad P53"),
}
_CPU_NAMES = {
    "Intel": ("Xeon E-2286M", "Core i9-9980HK", "Core i7-9750H", "Core i5-9400F", "Core i3-1005G1"),
    "AMD": ("Ryzen 7 PRO 2700U", "Ryzen 5 PRO 3500U", "Ryzen 3 PRO 3200GE"),
}
_GPU_NAMES = {
    "NVIDIA": ("RTX 2060", "RTX 2070", "GTX 1660-Ti", "GTX 1070"),
    "AMD": ("RX 590", "RX 580", "RX 5700-XT", "RX Vega-56"),
}


def new_cpu(rng: random.Random | None = None) -> processor_message_pb2.CPU:
    rng = rng or _RNG
    brand = rng.choice(tuple(_CPU_NAMES))
    cores = rng.randint(2, 8)
    min_ghz = rng.uniform(2.0, 3.5)
    return processor_message_pb2.CPU(
        brand=brand,
        name=rng.choice(_CPU_NAMES[brand]),
        number_cores=cores,
        number_threads=rng.randint(cores, 12),
        min_ghz=min_ghz,
        max_ghz=rng.uniform(min_ghz, 5.0),
    )


def new_gpu(rng: random.Random | None = None) -> processor_message_pb2.GPU:
    rng = rng or _RNG
    brand = rng.choice(tuple(_GPU_NAMES))
    min_ghz = rng.uniform(1.0, 1.5)
    return processor_message_pb2.GPU(
        brand=brand,
        name=rng.choice(_GPU_NAMES[brand]),
        min_ghz=min_ghz,
        max_ghz=rng.uniform(min_ghz, 2.0),
        memory=Memory(value=rng.randint(2, 6), unit=Memory.GIGABYTE),
    )


def new_screen(rng: random.Random | None = None) -> Screen:
    rng = rng or _RNG
    height = rng.randint(1080, 4320)
    return Screen(
        size_inch=rng.uniform(13.0, 17.0),
        resolution=Screen.Resolution(width=height * 16 // 9, height=height),
        panel=rng.choice((Screen.IPS, Screen.OLED)),
        multitouch=rng.random() < 0.5,
    )


def new_laptop(rng: random.Random | None = None) -> laptop_message_pb2.Laptop:
    """A random laptop with a fresh UUID (the Go client makes the id, the server logs it)."""
    rng = rng or _RNG
    brand = rng.choice(tuple(_LAPTOP_NAMES))
    updated_at = timestamp_pb2.Timestamp()
    updated_at.GetCurrentTime()
    return laptop_message_pb2.Laptop(
        id=str(uuid.uuid4()),
        brand=brand,
        name=rng.choice(_LAPTOP_NAMES[brand]),
        cpu=new_cpu(rng),
        ram=Memory(value=rng.randint(4, 64), unit=Memory.GIGABYTE),
        gpus=[new_gpu(rng)],
        storages=[
            Storage(driver=Storage.SSD, memory=Memory(value=rng.randint(128, 1024), unit=Memory.GIGABYTE)),
            Storage(driver=Storage.HDD, memory=Memory(value=rng.randint(1, 6), unit=Memory.TERABYTE)),
        ],
        screen=new_screen(rng),
        keyboard=Keyboard(
            layout=rng.choice((Keyboard.QWERTY, Keyboard.QWERTZ, Keyboard.AZERTY)),
            backlit=rng.random() < 0.5,
        ),
        weight_kg=rng.uniform(1.0, 3.0),
        price_usd=rng.uniform(1500.0, 3500.0),
        release_year=rng.randint(2015, 2019),
        updated_at=updated_at,
    )


def new_score(rng: random.Random | None = None) -> float:
    """A random rating score from 1 to 10."""
    rng = rng or _RNG
    return float(rng.randint(1, 10))
