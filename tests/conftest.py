"""Shared fixtures: a byte-level tokenizer and a tiny random Llama saved as a normal HF folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def byte_tok():
    from mcts_cot.tiny import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from mcts_cot.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))
