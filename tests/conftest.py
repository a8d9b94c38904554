"""Shared fixtures: tiny configs, models, tokenizers and processors built in-process (nothing from the Hub)."""

from __future__ import annotations

import os

import pytest
import torch

# Two xdist workers on two cores: one thread each keeps them from fighting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny import tiny_config, tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()
