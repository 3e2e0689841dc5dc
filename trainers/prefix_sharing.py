"""Prefix sharing: a preference pair as ONE sequence, so the long shared context is encoded once.

Layout (the official dpo-prefix-sharing one, arXiv 2410.20305, `trainer.py`), for shared context `s` of
length S (prompt + shared reasoning prefix), chosen suffix `c` (C tokens) and rejected suffix `r` (R tokens),
after `pad` left-padding tokens:

    tokens     [pad…] s[0] … s[S-1]  c[0] … c[C-1]  s[S-1]   r[0] … r[R-1]
    positions    0      0  …  S-1     S  …  S+C-1    S-1      S  …  S+R-1

The last context token is written twice. Its first copy's logits predict c[0]; the duplicate (same token,
same position, same visible context, hence the same hidden states) predicts r[0]. Queries from the duplicate
on may not see the chosen span nor the first copy, so every rejected token sees exactly what it sees in the
two-sequence layout: s and the rejected tokens before it. Outputs are therefore those of two separate
forwards, up to float rounding, while the context is computed once.

The attention predicate lives in `allowed` and serves both backends: a dense boolean [B, 1, T, T] mask for
SDPA / eager (CPU and GPU) and a FlexAttention `BlockMask` (GPU), whose block sparsity skips the chosen span
for rejected queries entirely.
"""

from __future__ import annotations

import torch


def layout(shared: list[int], chosen: list[int], rejected: list[int]) -> tuple[list[int], list[int]]:
    """Token ids and position ids of one shared row (no padding)."""
    S, C, R = len(shared), len(chosen), len(rejected)
    ids = shared + chosen + shared[-1:] + rejected
    positions = list(range(S + C)) + [S - 1] + list(range(S, S + R))
    return ids, positions


def allowed(q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor, shared: torch.Tensor,
            chosen: torch.Tensor) -> torch.Tensor:
    """May query index `q` attend to key index `kv`? All arguments broadcast against each other.

    Causal; never onto left padding; rejected-side queries (the duplicate and after) blind to the first copy
    of the last context token and the chosen span. A padding query sees itself only, so no softmax row is
    empty (an all-masked row gives NaN, and NaN times a zero weight is still NaN in the backward).
    """
    dup = pad + shared + chosen
    blind = (q >= dup) & (kv >= pad + shared - 1) & (kv < dup)
    return ((q >= kv) & (kv >= pad) & ~blind) | (q == kv)


def dense_mask(segments: torch.Tensor, length: int) -> torch.Tensor:
    """Boolean [B, 1, T, T] mask (True = attend) from per-row (pad, S, C) for SDPA / eager attention.

    transformers passes a 4-D mask through `create_causal_mask` untouched, and uses the explicit
    `position_ids` for the rotary embedding.
    """
    idx = torch.arange(length, device=segments.device)
    pad, shared, chosen = (segments[:, i].view(-1, 1, 1) for i in range(3))
    return allowed(idx.view(1, -1, 1), idx.view(1, 1, -1), pad, shared, chosen).unsqueeze(1)


def block_mask(segments: torch.Tensor, length: int):
    """FlexAttention `BlockMask` for the same predicate (GPU; attn_implementation=flex_attention)."""
    from torch.nn.attention.flex_attention import create_block_mask

    pad, shared, chosen = segments[:, 0], segments[:, 1], segments[:, 2]

    def mask_mod(b, h, q, kv):
        return allowed(q, kv, pad[b], shared[b], chosen[b])

    return create_block_mask(mask_mod, B=segments.shape[0], H=None, Q_LEN=length, KV_LEN=length,
                             device=segments.device)


def attention_mask(segments: torch.Tensor, length: int, attn_implementation: str):
    """The mask object the model's attention backend expects."""
    if attn_implementation == "flex_attention":
        return block_mask(segments, length)
    return dense_mask(segments, length)
