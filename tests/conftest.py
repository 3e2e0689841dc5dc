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


@pytest.fixture(scope="session")
def tree_records():
    """Every tree of a run dir as its record, by problem id, without its wall time (the one field a rerun of the
    same search may change): what "a resumed run equals an uninterrupted one" compares."""
    from mcts_cot.store import iter_trees

    def records(run_dir) -> dict[str, dict]:
        return {t.problem["id"]: {**t.to_record(), "stats": {k: v for k, v in t.stats.items() if k != "seconds"}}
                for t in iter_trees(run_dir)}

    return records


@pytest.fixture(scope="session")
def gpu_loss_and_grads():
    """cDPO + NLL loss and the flat gradients of the tiny Llama (seed 3) on one batch on the GPU, laid out by
    `collator` and run with attention `impl`: what the FlexAttention-on-GPU tests compare with SDPA."""
    import torch

    from mcts_cot.tiny import byte_tokenizer, tiny_llama
    from trainers import losses
    from trainers.trainer import forward_token_logps

    def run(examples, impl: str, collator, ref) -> tuple[float, torch.Tensor]:
        model = tiny_llama(byte_tokenizer(), seed=3).cuda()
        model.set_attn_implementation(impl)
        batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in collator(examples).items()}
        settings = losses.LossSettings("cdpo", alpha=1.0)
        loss, _ = losses.compute(settings, forward_token_logps(model, batch, impl), batch, tuple(r.cuda() for r in ref))
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    return run
