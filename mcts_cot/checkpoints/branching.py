"""Checkpoint branching ("Checkpoint DPO"): continuations of existing trajectories from chosen checkpoints.

From a correct trajectory's checkpoint, `branch.n` continuations are sampled at once: those that go wrong make
right-to-wrong pairs (the original continuation chosen). From a wrong trajectory's checkpoint, continuations
are sampled `branch.wave` at a time until one is right or `branch.max_attempts` are spent: a right one makes a
wrong-to-right pair against the original wrong continuation. Which checkpoints: `split.choose`, seeded per
problem and trajectory. The pairs themselves are cut by export-pairs' `checkpoint` strategy (pairs.py).
"""

from __future__ import annotations

import random

from mcts_cot.backends.base import Request, stable_seed
from mcts_cot.checkpoints.seeded import CONTINUATION, Chain, Seeded
from mcts_cot.checkpoints.split import choose
from mcts_cot.policies import Expansion
from mcts_cot.tree import Node


class Branching(Seeded):
    """One problem's trajectories and their continuations from chosen checkpoints."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open: list[dict] = []  # one task per chosen checkpoint: node, attempts left, solved, pending
        for i, chain in enumerate(self.chains):
            if chain.verdict == "unverifiable":
                continue
            rng = random.Random(stable_seed(self.seed, "checkpoints", i))
            for cut in choose(chain.cuts, self.cfg.branch.checkpoints, rng):
                self.open.append(self._task(chain, cut))

    def _task(self, chain: Chain, cut: int) -> dict:
        right = chain.verdict == "correct"
        return {"node": chain.at(cut), "want": "wrong" if right else "right", "pending": False, "solved": False,
                "left": self.cfg.branch.n if right else self.cfg.branch.max_attempts, "sent": 0}

    def plan(self) -> list[Expansion]:
        out = []
        for task in self.open:
            if task["pending"] or self._closed(task):
                continue
            b = self.cfg.branch
            n = task["left"] if task["want"] == "wrong" else min(b.wave, task["left"])
            node = task["node"]
            req = Request(prompt_ids=self.tree.prompt_ids + self.tree.path_ids(node), n=n,
                          max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                          seed=stable_seed(self.seed, "branch", node.id, task["sent"]))
            task.update(pending=True, left=task["left"] - n, sent=task["sent"] + 1)
            self.stats["waves"] += 1
            out.append(Expansion(node=node, request=req, action=CONTINUATION, head_ids=[], head_text=""))
        return out

    def grow(self, exp: Expansion, completions) -> list[Node]:
        task = next(t for t in self.open if t["node"] is exp.node)
        task["pending"] = False
        self.stats["expansions"] += 1
        return [self.add_response(exp.node, CONTINUATION, c) for c in completions]

    def score(self, node: Node, verdict: str) -> None:
        super().score(node, verdict)
        if node.kind == CONTINUATION and verdict == "correct":
            for task in self.open:
                if task["node"].id == node.parent and task["want"] == "right":
                    task["solved"] = True

    @staticmethod
    def _closed(task: dict) -> bool:
        return task["solved"] or task["left"] <= 0

    def outcome(self) -> tuple[str, str] | None:
        if any(t["pending"] or not self._closed(t) for t in self.open):
            return None
        solved = sum(t["solved"] for t in self.open)
        status = "success" if self.stats["correct"] else "failure"
        return status, f"{len(self.chains)} trajectories, {len(self.open)} checkpoints, {solved} wrong-to-right"
