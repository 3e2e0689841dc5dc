"""What every search strategy shares: one problem's tree, its counters, the verdicts of its terminals backed
up to the root, and the hand-over of a finished tree.

A strategy (`mcts.py`, `best_of_n.py`) decides which requests a tree sends (`plan`) and what their completions
become (`grow`). Everything from a verified terminal on (its verdict, the reward backup, the counts the budget
rules read, the finished record) lives here, so every strategy labels and backs up alike and their trees are
comparable node for node. The engine (`engine.py`) only sees the `TreeGrower` interface: it asks a tree for
requests and hands back each request's completions one request at a time, so a scheduler that feeds the
backend continuously fits the same interface as the lock-step waves.

A run-level allocator (`allocator.py`) moves budget between trees: it sets each tree's `grant` (tokens it may
have spent so far) at fixed token checkpoints; a tree that has spent its grant is `paused` and plans nothing
until the next checkpoint, and `marks` records where each checkpoint found it, so a run's state at any
checkpoint can be read back from the finished trees. A strategy that branches an existing trajectory
(checkpoint DPO) is a `Growth` whose constructor adds the trajectory's steps under the root.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol

from mcts_cot.backends.base import Completion, stable_seed
from mcts_cot.policies import Expansion, StepPolicy
from mcts_cot.problems import Problem
from mcts_cot.search.config import SearchConfig
from mcts_cot.tree import Node, Tree


class TreeGrower(Protocol):
    """One problem's tree as the engine drives it."""

    problem: Problem
    tree: Tree
    stats: Counter

    def plan(self, slots: int | None = None) -> list[Expansion]:
        """The requests this tree sends now (empty: it waits, or has nothing left to expand); `slots`: the most
        requests it may have in flight (the continuous scheduler), None: one wave's worth."""
        ...

    def grow(self, exp: Expansion, completions: list[Completion]) -> list[Node]:
        """Add one request's completions to the tree; return the new terminal nodes to verify."""
        ...

    def score(self, node: Node, verdict: str) -> None:
        """Record a terminal's verdict and back its reward up to the root."""
        ...

    def outcome(self) -> tuple[str, str] | None:
        """(status, reason) once the tree is done, else None."""
        ...

    def finish(self, status: str, reason: str) -> Tree:
        """The finished tree record, with its status, reason and counts."""
        ...


class Growth:
    """The shared half of every strategy (see the module docstring)."""

    def __init__(self, problem: Problem, prompt_ids: list[int], prompt_text: str, policy: StepPolicy,
                 cfg: SearchConfig):
        self.problem, self.policy, self.cfg = problem, policy, cfg
        self.tree = Tree(problem=problem.to_dict(), prompt_ids=prompt_ids, prompt_text=prompt_text)
        self.seed = stable_seed(cfg.seed, problem.id)
        self.stats = Counter(rollouts=0, correct=0, wrong=0, no_answer=0, unverifiable=0, expansions=0,
                             generated_tokens=0, merged=0, waves=0, answer_boxed=0, answer_phrase=0)
        self.started = time.perf_counter()
        self.grant: int | None = None  # set by a run-level allocator; None: the strategy's own rule alone
        self.marks: list[tuple[int, int]] = []  # (generated tokens, nodes) at each allocator checkpoint

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        """Refuse, in one line, a config this strategy cannot run (none by default)."""

    @property
    def paused(self) -> bool:
        """The tree has spent its allocator grant and waits for the next checkpoint."""
        return self.grant is not None and self.stats["generated_tokens"] >= self.grant

    def mark(self, grant: int) -> None:
        """An allocator checkpoint: remember where it found the tree, then raise its grant."""
        self.marks.append((self.stats["generated_tokens"], len(self.tree.nodes)))
        self.grant = grant

    def score(self, node: Node, verdict: str) -> None:
        """Record a terminal's verdict and back its reward up to the root (mean backup: N and W); count answer
        terminals by how their answer was recognised (answer_boxed / answer_phrase)."""
        node.verdict = verdict
        self.stats[verdict] += 1
        if node.answer_by:
            self.stats[f"answer_{node.answer_by}"] += 1
        self.stats["rollouts"] += 1
        reward = {"correct": self.cfg.reward.correct, "no_answer": self.cfg.reward.no_answer}.get(verdict, self.cfg.reward.wrong)
        n: Node | None = node
        while n is not None:
            n.N += 1
            n.W += reward
            n = self.tree.nodes[n.parent] if n.parent is not None else None

    def finish(self, status: str, reason: str) -> Tree:
        self.tree.status, self.tree.reason = status, reason
        self.tree.stats = {**self.stats, "nodes": len(self.tree.nodes),
                           "seconds": round(time.perf_counter() - self.started, 3)}
        if self.marks:
            self.tree.stats["checkpoints"] = [list(m) for m in self.marks]
        return self.tree
