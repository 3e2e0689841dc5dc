"""Prefix sharing: exact layout and mask, and the same loss AND gradients as two sequences (float32, 1e-4)."""

from __future__ import annotations

import random

import pytest
import torch

from mcts_cot.tiny import byte_tokenizer, tiny_llama
from trainers import losses, prefix_sharing
from trainers.data import PairCollator
from trainers.trainer import forward_token_logps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layout_duplicates_last_context_token_and_restarts_positions():
    ids, positions = prefix_sharing.layout([1, 2, 3], [4, 5], [6, 7, 8])
    assert ids == [1, 2, 3, 4, 5, 3, 6, 7, 8]
    assert positions == [0, 1, 2, 3, 4, 2, 3, 4, 5]


def test_mask_hides_chosen_from_rejected_and_padding_from_all():
    # one row: 1 pad, shared S=3 (idx 1-3), chosen C=2 (idx 4-5), duplicate idx 6, rejected idx 7-8
    m = prefix_sharing.dense_mask(torch.tensor([[1, 3, 2]]), 9)[0, 0]
    assert m.shape == (9, 9) and m.dtype == torch.bool
    assert m[0].tolist() == [True] + [False] * 8  # padding query: itself only
    assert not m[1:, 0].any()  # nobody attends to padding
    assert m[5, 1:6].all() and not m[5, 6:].any()  # last chosen token: context + chosen, causal
    for q in (6, 7, 8):  # duplicate and rejected: context minus its last token, then duplicate + rejected
        assert m[q].tolist() == [False, True, True, False, False, False] + [k <= q for k in (6, 7, 8)]


def make_examples(masking: bool, seed: int = 0) -> list[dict]:
    """Pairs with different context lengths (so rows pad) and suffixes of unequal length."""
    rng = random.Random(seed)
    shapes = [(9, 4, 3, 6), (5, 0, 5, 2), (12, 7, 1, 4)]  # prompt, prefix, chosen, rejected lengths
    out = []
    for i, (p, x, c, r) in enumerate(shapes):
        prompt, prefix = [rng.randrange(256) for _ in range(p)], [rng.randrange(256) for _ in range(x)]
        out.append({"index": i, "shared": prompt + prefix, "prefix_len": x, "epsilon": [0.0, 0.2, 0.45][i],
                     "response_start": p + x if masking else p,
                     "chosen": [rng.randrange(256) for _ in range(c)], "rejected": [rng.randrange(256) for _ in range(r)]})
    return out


@pytest.fixture(scope="module")
def tok_model():
    tok = byte_tokenizer()
    return tok, tiny_llama(tok, seed=3)


def loss_and_grads(model, batch, settings):
    model.zero_grad()
    ref = (torch.tensor([-20.0, -9.0, -30.0]), torch.tensor([-25.0, -8.0, -28.0]))
    loss, metrics = losses.compute(settings, forward_token_logps(model, batch), batch, ref)
    loss.backward()
    return loss.detach(), metrics, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("masking", [True, False])
def test_same_loss_and_gradients_as_two_sequences(tok_model, masking, loss_settings):
    tok, model, settings = *tok_model, loss_settings
    examples = make_examples(masking)
    two = PairCollator(tok.pad_token_id, prefix_sharing=False)(examples)
    one = PairCollator(tok.pad_token_id, prefix_sharing=True)(examples)
    assert one["input_ids"].shape[0] == 3 and two["input_ids"].shape[0] == 6
    loss_a, metrics_a, grads_a = loss_and_grads(model, two, settings)
    loss_b, metrics_b, grads_b = loss_and_grads(model, one, settings)
    assert abs(loss_a.item() - loss_b.item()) < 1e-4
    for key in ("logps/chosen", "logps/rejected", "nll"):
        assert abs(metrics_a[key].item() - metrics_b[key].item()) < 1e-4
    worst = max((grads_a[n] - grads_b[n]).abs().max().item() for n in grads_a)
    assert worst < 1e-4
    assert one["masked_tokens"] == two["masked_tokens"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_block_mask_is_the_dense_mask():
    """The BlockMask's mask_mod against the dense mask, through eager (uncompiled) flex_attention on CPU."""
    from torch.nn.attention.flex_attention import flex_attention

    segments, T = torch.tensor([[1, 3, 2], [0, 4, 1], [3, 2, 2]]), 10
    q, k, v = (torch.randn(3, 2, T, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    with torch.no_grad():
        flex = flex_attention(q, k, v, block_mask=prefix_sharing.block_mask(segments, T))
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=prefix_sharing.dense_mask(segments, T))
    assert (flex - dense).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled FlexAttention with backward needs a GPU")
def test_flex_attention_model_matches_sdpa_on_gpu(gpu_loss_and_grads):
    pad = byte_tokenizer().pad_token_id
    ref = (torch.tensor([-20.0, -9.0, -30.0]), torch.tensor([-25.0, -8.0, -28.0]))
    results = [gpu_loss_and_grads(make_examples(masking=True), impl, PairCollator(pad, sharing, pad_to_multiple_of=128), ref)
               for impl, sharing in (("sdpa", False), ("flex_attention", True))]
    assert abs(results[0][0] - results[1][0]) < 1e-3
    assert (results[0][1] - results[1][1]).abs().max() < 1e-3
