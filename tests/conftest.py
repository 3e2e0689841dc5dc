"""Shared fixtures: a byte-level tokenizer and a tiny random Llama saved as a normal HF folder.

Nothing here downloads: models are built locally (mcts_cot.tiny); slow tests use the embedded default.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def byte_tok():
    """The byte-level tokenizer with a ChatML template: decode(encode(x)) == x, eos = <|im_end|>."""
    from mcts_cot.tiny import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random Llama + byte tokenizer folder, loadable by path (built once per session)."""
    from mcts_cot.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a shared, busy CPU, spinning OpenMP threads cost 10x.
    Modules that train tiny models opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=[("cdpo", 0.0), ("cdpo", 1.0), ("dpo", 0.0), ("simpo", 1.0)], ids=["cdpo", "joint", "dpo", "simpo"])
def loss_settings(request):
    """Each objective the layout-equivalence tests compare: cDPO, the joint objective (α = 1), DPO and SimPO."""
    from trainers import losses

    objective, alpha = request.param
    return losses.LossSettings(objective, beta=0.1 if objective != "simpo" else 2.0, alpha=alpha)
