"""A tree that starts from existing trajectories: each one a chain of paragraph nodes under the root.

The chain's nodes hold the trajectory's own token ids, cut at paragraph breaks, so prompt + the ids down to
a checkpoint node is exactly the original prefix, and a continuation requested from that node shares it token
for token (the export's shared prefix, the trainer's masking and tree packing all see it). The chain's end is
the original answer, verified once before the tree is built and backed up like any rollout; its generated
tokens are not counted (only new continuations are). Strategies (`branching.py`, `dto.py`) add what they
request from the chain's checkpoint nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcts_cot.answers import read_answer
from mcts_cot.checkpoints.split import checkpoints, paragraphs, token_bounds
from mcts_cot.checkpoints.trajectories import Trajectory
from mcts_cot.search.growth import Growth
from mcts_cot.tree import Node

ORIGINAL, CONTINUATION, EXIT = "original", "continuation", "exit"  # node kinds


@dataclass
class Seed:
    """One trajectory made ready for a tree: token pieces per paragraph, candidate cuts, answer and verdict."""

    pieces: list[list[int]]  # token ids of each paragraph; joined they are the trajectory's ids
    cuts: list[int]  # candidate checkpoints: continue after this many pieces (1 <= k < len(pieces))
    answer: str | None
    answer_by: str | None
    verdict: str = "no_answer"
    prompt_ids: list[int] | None = None


def prepare(traj: Trajectory, tokenizer, breaks: list[str], markers: list[str]) -> Seed:
    """Tokenise once (a run's path keeps its ids), cut the ids at the paragraph breaks, find the checkpoints."""
    ids = traj.token_ids if traj.token_ids is not None else tokenizer.encode(traj.text, add_special_tokens=False)
    parts = paragraphs(traj.text, breaks)
    bounds = token_bounds(tokenizer, ids, parts)
    pieces = [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    keep = [k for k in checkpoints(parts, markers) if 0 < bounds[k] < len(ids)]
    # Two breaks on one token make an empty piece: drop it, and renumber the cuts to the pieces kept.
    index = {k: sum(1 for p in pieces[:k] if p) for k in range(len(pieces) + 1)}
    cuts = sorted({index[k] for k in keep})
    answer, by = read_answer(traj.text)
    return Seed([p for p in pieces if p], cuts, answer, by, prompt_ids=traj.prompt_ids)


@dataclass
class Chain:
    """One trajectory in the tree: its paragraph nodes (root's child first) and its candidate checkpoints."""

    nodes: list[Node]
    cuts: list[int]
    verdict: str
    state: dict = field(default_factory=dict)  # the strategy's bookkeeping

    @property
    def end(self) -> Node:
        return self.nodes[-1]

    def at(self, cut: int) -> Node:
        """The node a continuation after `cut` pieces grows from."""
        return self.nodes[cut - 1]


class Seeded(Growth):
    """The shared half of checkpoint strategies: the chains, and continuations grown as whole responses."""

    def __init__(self, problem, prompt_ids, prompt_text, policy, cfg, seeds: list[Seed]):
        super().__init__(problem, prompt_ids, prompt_text, policy, cfg)
        self.chains = [self._chain(seed) for seed in seeds]

    def _chain(self, seed: Seed) -> Chain:
        node, nodes = self.tree.root, []
        for piece in seed.pieces:
            node = self.tree.add(node, kind=ORIGINAL, text=self.policy.tok.decode(piece), token_ids=list(piece))
            nodes.append(node)
        node.terminal = "answer" if seed.answer is not None else "eos"
        node.answer, node.answer_by = seed.answer, seed.answer_by
        self.score(node, seed.verdict)
        return Chain(nodes, seed.cuts, seed.verdict)

    def add_response(self, parent: Node, kind: str, completion, head_text: str = "", head_ids=()) -> Node:
        """A whole continuation as one terminal node (ended by the policy's whole-response rule)."""
        self.stats["generated_tokens"] += len(completion.token_ids)
        node = self.tree.add(parent, kind=kind, text=head_text + completion.text,
                             token_ids=[*head_ids, *completion.token_ids], logprob=completion.logprob,
                             finish=completion.finish)
        node.terminal = self.policy.end_response(node)
        return node
