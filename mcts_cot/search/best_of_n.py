"""Best-of-N as a search strategy: whole responses sampled from the root, the baseline MCTS must beat.

Each sample is one child of the root, ended by the policy's terminal rule for whole responses and backed up
like any MCTS rollout (`growth.py`), so an exported best-of-N run differs from an MCTS run only in its tree
shape. A tree samples `best_of_n.n` responses in one request, or `best_of_n.wave` at a time until it has
generated `best_of_n.tokens_per_problem` tokens (or `max_n` samples), or, under the run-level allocator,
`wave` at a time while its grant lasts. Samples are not merged: N counts draws.
"""

from __future__ import annotations

from mcts_cot.backends.base import Completion, Request, stable_seed
from mcts_cot.errors import UserError
from mcts_cot.policies import Expansion
from mcts_cot.search.config import SearchConfig
from mcts_cot.search.growth import Growth
from mcts_cot.tree import Node


class BestOfN(Growth):
    """One problem's best-of-N samples as a one-level tree."""

    pending = False  # a request is out and its completions not yet grown

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        """A best-of-N run needs a sample count, a token budget per problem, or the run-level allocator."""
        if cfg.best_of_n.n is None and cfg.best_of_n.tokens_per_problem is None and cfg.allocator.tokens_per_problem is None:
            raise UserError(f"strategy {cfg.strategy}: set best_of_n.n (samples per problem), best_of_n.tokens_per_problem "
                            "or allocator.tokens_per_problem")

    def plan(self, slots: int | None = None) -> list[Expansion]:
        """One request at a time, whatever `slots` the scheduler offers: a tree's samples are drawn in order."""
        if self.pending or self.paused or self._spent():
            return []
        bon = self.cfg.best_of_n
        n = bon.n if bon.n is not None and self.grant is None else min(bon.wave, bon.max_n - self.stats["rollouts"] - self.stats["merged"])
        root = self.tree.root
        req = Request(prompt_ids=self.tree.prompt_ids, n=n, max_tokens=self.policy.max_path_tokens,
                      temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                      seed=stable_seed(self.seed, "best_of_n", self.stats["waves"]))
        self.pending = True
        self.stats["waves"] += 1
        return [Expansion(node=root, request=req, action="sample", head_ids=[], head_text="")]

    def grow(self, exp: Expansion, completions: list[Completion]) -> list[Node]:
        self.pending = False
        out = []
        for comp in completions:
            self.stats["generated_tokens"] += len(comp.token_ids)
            node = self.tree.add(exp.node, kind=exp.action, text=comp.text, token_ids=list(comp.token_ids),
                                 logprob=comp.logprob, finish=comp.finish)
            node.terminal = self.policy.end_response(node)
            out.append(node)
        return out

    def _spent(self) -> bool:
        """Every sample drawn (a merged copy, fork's, counts as a draw). Under the allocator only `max_n` ends a
        tree: the allocator ends the rest."""
        bon, s = self.cfg.best_of_n, self.stats
        if self.grant is not None:
            return s["rollouts"] + s["merged"] >= bon.max_n
        if bon.n is not None:
            return s["waves"] > 0
        return s["generated_tokens"] >= bon.tokens_per_problem or s["rollouts"] + s["merged"] >= bon.max_n

    def outcome(self) -> tuple[str, str] | None:
        """Done once every sample is drawn and verified: solved when any sample is correct."""
        if self.pending or not self._spent():
            return None
        s = self.stats
        return ("success" if s["correct"] else "failure"), f"{s['rollouts']} samples, {s['correct']} correct"
