"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fowm_core.runtime.trust import generate_key, load_key


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a loaded 2-core machine punishes two by ~10x;
    the module's previous thread count comes back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """A lab key (docs/trust.md) in a fresh, private key file."""
    return load_key(generate_key(tmp_path / "keys" / "fowm.key"))


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    """The trusted checkpoint directory of a trust test."""
    d = tmp_path / "checkpoints"
    d.mkdir()
    return d
