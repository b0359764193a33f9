"""Shared pytest fixtures."""

import os
import pathlib

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
D5C5_PATH = ROOT.parent / "shared" / "data" / "d5_c5.npz"


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX types, for tolerances tighter than float32 allows."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def d5c5_path():
    """Path of the published D5-C5 weights; the test is skipped where they are absent."""
    if not D5C5_PATH.exists():
        pytest.skip(f"published D5-C5 weights not found at {D5C5_PATH} (they live in ../shared/data/, "
                    "which CI has and users' machines usually do not)")
    return D5C5_PATH
