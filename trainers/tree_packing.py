"""Tree packing: every sequence of a batch merged into token tries, each shared segment written once.

Pairwise prefix sharing (`trainers.prefix_sharing`) still repeats the prompt in every pair of a problem, and
step pairs of one tree repeat their common ancestors. Here the chosen and rejected sequences (shared +
suffix) of many examples go into one trie of token ids (Tree Training, arXiv 2511.00413): a token shared by
several sequences at the same place is one node. Nodes are laid out in depth-first pre-order, so the subtree
of node k is the contiguous index range [k, end[k]), and

    node q may attend to node k  ⇔  k is an ancestor of q or q itself  ⇔  k ≤ q < end[k];
    position of a node = its depth (its index in each sequence that passes through it).

Every node therefore sees exactly its own sequence's prefix, with the positions it has there: its hidden
states are those of a separate forward, up to float rounding. A branching node's logits predict each of
its children; the scored log-probs are gathered per (row, node, target) into one row per response, chosen
rows first then rejected rows, with the masks `trainers.losses` already folds (the two-sequence layout).

A packing budget (tokens per packed row) splits a batch's tries into several rows; an example is never
split, and one whose own trie exceeds the budget gets a row of its own. Rows are left-padded (scored tokens
sit at the end, for `logits_to_keep`); a padding token attends to itself only. The predicate serves both
backends: a dense boolean [P, 1, T, T] mask for SDPA / eager, a FlexAttention `BlockMask` on GPU.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import torch

from mcts_cot.rows import Example
from trainers.data import per_pair_fields


class Trie:
    """One packed row: token nodes with parent links, built by inserting sequences."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.children: list[dict[int, int]] = []
        self.roots: dict[int, int] = {}

    def truncate(self, n: int) -> None:
        """Drop nodes n, n+1, … (what an insertion that broke the budget added; no older node is below them)."""
        for node in range(len(self.tokens) - 1, n - 1, -1):
            level = self.children[self.parent[node]] if self.parent[node] >= 0 else self.roots
            del level[self.tokens[node]]
        del self.tokens[n:], self.parent[n:], self.children[n:]

    def insert(self, seq: list[int]) -> list[int]:
        """Insert `seq`; returns the node of each of its tokens (its path)."""
        path, level, parent = [], self.roots, -1
        for tok in seq:
            if tok not in level:
                level[tok] = len(self.tokens)
                self.tokens.append(tok)
                self.parent.append(parent)
                self.children.append({})
            parent = level[tok]
            path.append(parent)
            level = self.children[parent]
        return path

    def preorder(self) -> tuple[list[int], list[int], list[int]]:
        """(order, end, depth): node ids in depth-first pre-order; per laid-out index, the end of its subtree
        (exclusive, in laid-out indices) and its depth."""
        order, depth_of, stack = [], {}, [(n, 0) for n in reversed(self.roots.values())]
        while stack:
            node, depth = stack.pop()
            order.append(node)
            depth_of[node] = depth
            stack.extend((c, depth + 1) for c in reversed(self.children[node].values()))
        index = {node: i for i, node in enumerate(order)}
        end = list(range(1, len(order) + 1))
        for node in reversed(order):  # children before parents: a parent's end is its last child's end
            if self.parent[node] >= 0:
                p = index[self.parent[node]]
                end[p] = max(end[p], end[index[node]])
        return order, end, [depth_of[n] for n in order]


def sequences(ex: Example) -> list[tuple[str, list[int]]]:
    """The example's responses as full sequences: ('chosen', shared + chosen) and, for a pair, rejected."""
    return [(name, ex["shared"] + ex[name]) for name in ("chosen", "rejected") if ex[name] is not None]


def pack(examples: list[Example], budget: int) -> list[tuple[Trie, list[int]]]:
    """Greedy packing in batch order: (trie, indices of its examples) per row, each ≤ `budget` nodes
    unless a single example alone is larger."""
    packs: list[tuple[Trie, list[int]]] = []
    for i, ex in enumerate(examples):
        if packs:
            trie, members = packs[-1]
            before = len(trie.tokens)
            for _, seq in sequences(ex):
                trie.insert(seq)
            if len(trie.tokens) <= budget:
                members.append(i)
                continue
            trie.truncate(before)
        trie = Trie()
        for _, seq in sequences(ex):
            trie.insert(seq)
        packs.append((trie, [i]))
    return packs


@dataclasses.dataclass
class TreeCollator:
    """Packs a batch of examples (pairs or SFT rows) into tries for `trainers.losses`.

    Output: input_ids, position_ids, tree_end [P, T] (P packed rows, left-padded; tree_end is the exclusive
    end of each node's subtree, the mask's only input); keep; score_row, score_pos, score_target [N, L]:
    for each response (N = 2B for pairs, chosen rows first; B for SFT), the packed row, the position inside
    the last `keep` positions and the token of each scored log-prob; chosen_mask, rejected_mask [N, L];
    epsilon, cached reference log-probs and token counts as `PairCollator` gives them.
    """

    pad_token_id: int
    budget: int = 8192
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        packs = pack(examples, self.budget)
        layouts = [trie.preorder() for trie, _ in packs]
        T = max(len(trie.tokens) for trie, _ in packs)
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = self._rows(packs, layouts, T)
        scores = self._scores(examples, packs, layouts, T)
        keep = T - min((pos for row in scores for _, pos, _ in row), default=T - 1)
        batch.update(self._score_tensors(scores, T, keep, paired=examples[0]["rejected"] is not None))
        batch["keep"] = keep
        batch.update(per_pair_fields(examples))
        return batch

    def _rows(self, packs: list[tuple[Trie, list[int]]], layouts: list, T: int) -> dict[str, torch.Tensor]:
        P = len(packs)
        input_ids = torch.full((P, T), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((P, T), dtype=torch.long)
        tree_end = torch.arange(1, T + 1).repeat(P, 1)  # padding: itself only
        for p, ((trie, _), (order, end, depth)) in enumerate(zip(packs, layouts, strict=True)):
            off = T - len(order)
            input_ids[p, off:] = torch.tensor([trie.tokens[n] for n in order])
            position_ids[p, off:] = torch.tensor(depth)
            tree_end[p, off:] = torch.tensor(end) + off
        return {"input_ids": input_ids, "position_ids": position_ids, "tree_end": tree_end}

    @staticmethod
    def _scores(examples, packs, layouts, T: int) -> list[list[tuple[int, int, int]]]:
        """Per response (chosen rows, then rejected rows): (packed row, padded position, target) per scored token.
        Token j of a sequence is predicted by the logits of the node of token j-1."""
        chosen, rejected = [None] * len(examples), [None] * len(examples)
        for p, ((trie, members), (order, _, _)) in enumerate(zip(packs, layouts, strict=True)):
            off = T - len(order)
            where = {node: off + i for i, node in enumerate(order)}
            for i in members:
                ex = examples[i]
                for name, seq in sequences(ex):
                    path = trie.insert(seq)  # already present: only reads the path
                    row = [(p, where[path[j - 1]], seq[j]) for j in range(ex["response_start"], len(seq))]
                    (chosen if name == "chosen" else rejected)[i] = row
        return chosen + [r for r in rejected if r is not None]

    @staticmethod
    def _score_tensors(scores, T: int, keep: int, paired: bool) -> dict[str, torch.Tensor]:
        N, L = len(scores), max(1, max(len(r) for r in scores))
        row, pos, target = (torch.zeros((N, L), dtype=torch.long) for _ in range(3))
        pos += keep - 1  # unused slots read a real position; their mask is 0
        chosen_mask, rejected_mask = torch.zeros((N, L)), torch.zeros((N, L))
        half = N // 2 if paired else N
        for n, entries in enumerate(scores):
            if entries:
                row[n, :len(entries)], pos[n, :len(entries)], target[n, :len(entries)] = (
                    torch.tensor(col) for col in zip(*entries, strict=True))
                pos[n, :len(entries)] -= T - keep
            (chosen_mask if n < half else rejected_mask)[n, :len(entries)] = 1.0
        return {"score_row": row, "score_pos": pos, "score_target": target, "chosen_mask": chosen_mask,
                "rejected_mask": rejected_mask}


def token_logps(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """[N, L] log-probs of the scored tokens from the packed rows' last `keep` logits, in float32."""
    row, pos, target = batch["score_row"], batch["score_pos"], batch["score_target"]
    lse = torch.logsumexp(logits.float(), dim=-1)
    return logits[row, pos, target].float() - lse[row, pos]


def allowed(q: torch.Tensor, kv: torch.Tensor, kv_end: torch.Tensor) -> torch.Tensor:
    """May query `q` attend to key `kv` (whose subtree ends at `kv_end`)? Ancestor-or-self, in pre-order."""
    return (kv <= q) & (q < kv_end)


def dense_mask(tree_end: torch.Tensor) -> torch.Tensor:
    """Boolean [P, 1, T, T] mask (True = attend) for SDPA / eager attention."""
    idx = torch.arange(tree_end.shape[1], device=tree_end.device)
    return allowed(idx.view(1, -1, 1), idx.view(1, 1, -1), tree_end.unsqueeze(1)).unsqueeze(1)


def block_mask(tree_end: torch.Tensor):
    """FlexAttention `BlockMask` for the same predicate (GPU; attn_implementation=flex_attention)."""
    from torch.nn.attention.flex_attention import create_block_mask

    P, T = tree_end.shape

    def mask_mod(b, h, q, kv):
        return allowed(q, kv, tree_end[b, kv])

    return create_block_mask(mask_mod, B=P, H=None, Q_LEN=T, KV_LEN=T, device=tree_end.device)


def attention_mask(tree_end: torch.Tensor, attn_implementation: str):
    """The mask object the model's attention backend expects."""
    if attn_implementation == "flex_attention":
        return block_mask(tree_end)
    return dense_mask(tree_end)


class ProblemSampler(torch.utils.data.Sampler):
    """Shuffles problems, not examples: a problem's examples (same prompt) stay together and in order, so a
    batch holds whole problems and their tries share the prompt and the common ancestors."""

    def __init__(self, examples: list[Example], seed: int = 0):
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, ex in enumerate(examples):
            groups.setdefault(tuple(ex["shared"][:len(ex["shared"]) - ex["prefix_len"]]), []).append(i)
        self.groups = list(groups.values())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """The Trainer calls this every epoch: the order depends on (seed, epoch) only, so a resumed run
        and every DDP rank see the same one."""
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self):
        order = list(range(len(self.groups)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return (i for g in order for i in self.groups[g])
