"""A run-level token budget that moves between problems by need (`allocator.*`).

Spending the same tokens on every problem wastes most of them: a problem that every rollout solves stops paying
once it has `enough_correct` correct ends (the export keeps no more), and a hopeless one never pays. DeepSearch
skips solved problems and FastMCTS balances sampling by difficulty; here a group of problems shares one budget
and an allocator hands it out in tranches by each tree's expected new correct ends:

    need = p̂ · (enough_correct − correct),   p̂ = (correct + 1) / (ends + 2)   (the posterior mean solve rate)

so tokens flow to trees that are likely to yield and still have room, and away from saturated (need 0) and
hopeless ones (`hopeless_after` ends, none correct). A hopeless tree is closed (`hopeless: close`), or kept as a
reserve (`hopeless: reserve`): it waits, and at a checkpoint where no other tree of the group has need, the
reserve trees share the tranche by the same p̂ · room. On easy sets the in-between trees saturate early and a
closing allocator leaves budget unspent that plain sampling goes on using (docs/RESULTS.md §9); the reserve
spends it on the problems still unsolved, hardest last.

Determinism: a tree spends until its grant is gone and then waits; the allocator decides only when every open
tree of the group waits (a checkpoint), from the trees' own counts, in problem-id order. So the grants, and with
them the trees, do not depend on timing, batch composition or how the requests were scheduled, and a group
grown again on resume grows the same trees. A tranche does not depend on the total budget (only the last one is
cut to what remains), so a run's state at a checkpoint is exactly a run with that smaller budget: `marks`
record it per tree, and `yields.py` reads the budgets of one growing run back from them.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcts_cot.search.config import AllocatorConfig
from mcts_cot.search.growth import Growth


def groups(problems: Sequence, size: int) -> list[list]:
    """The allocation groups: consecutive runs of `size` problems in the run's order."""
    return [list(problems[i:i + size]) for i in range(0, len(problems), size)]


def need(cfg: AllocatorConfig, stats, reserve: bool = False) -> float:
    """Expected new correct ends per rollout, weighted by the room left under `enough_correct`; 0 for a saturated
    tree, and for a hopeless one unless it is the reserve's turn."""
    correct, ends = stats["correct"], stats["rollouts"]
    if correct >= cfg.enough_correct or (hopeless(cfg, stats) and not reserve):
        return 0.0
    return (correct + 1) / (ends + 2) * (cfg.enough_correct - correct)


def hopeless(cfg: AllocatorConfig, stats) -> bool:
    """`hopeless_after` ends and none correct."""
    return stats["correct"] == 0 and stats["rollouts"] >= cfg.hopeless_after


def split(total: int, weights: list[float]) -> list[int]:
    """`total` in integer shares proportional to `weights`; the remainder goes to the largest fractions, ties
    to the earlier tree (the problem-id order)."""
    norm = sum(weights)
    exact = [total * w / norm for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (shares[i] - exact[i], i))
    for i in order[:total - sum(shares)]:
        shares[i] += 1
    return shares


class Allocator:
    """One group's budget: `checkpoint` hands out the next tranche and says which trees to close."""

    def __init__(self, cfg: AllocatorConfig, trees: Sequence[Growth]):
        self.cfg = cfg
        self.trees = sorted(trees, key=lambda t: str(t.problem.id))
        self.budget = cfg.tokens_per_problem * len(trees)
        self.checkpoints = 0

    def committed(self, live: Sequence[Growth]) -> int:
        """Tokens spent by finished trees plus what the live ones spent or were granted."""
        ids = {id(t) for t in live}
        return sum(max(t.grant or 0, t.stats["generated_tokens"]) if id(t) in ids else t.stats["generated_tokens"]
                   for t in self.trees)

    def checkpoint(self, live: Sequence[Growth]) -> list[tuple[Growth, str]]:
        """Called when every live tree waits: close the trees with no need (or all, once the budget is gone)
        and raise the others' grants by their share of the next tranche; reserve trees that get no share wait
        (marked with no new grant, so mark k is every tree's state at checkpoint k). Returns (tree, reason) to
        close."""
        self.checkpoints += 1
        ids = {id(t) for t in live}
        live = [t for t in self.trees if id(t) in ids]
        reserve = self.cfg.hopeless == "reserve"
        weights = [need(self.cfg, t.stats) for t in live]
        if reserve and not any(weights):  # nothing else to spend on: the reserve's turn
            weights = [need(self.cfg, t.stats, reserve=True) for t in live]
        open_, waiting, closed = [], [], []
        for t, w in zip(live, weights, strict=True):
            if w > 0:
                open_.append((t, w))
            elif reserve and hopeless(self.cfg, t.stats):
                waiting.append(t)
            else:
                closed.append((t, self._why_closed(t)))
        tranche = min(self.budget - self.committed(live), self.cfg.step_tokens * len(open_))
        if open_ and tranche <= 0:
            spent = f"allocator: run budget spent at checkpoint {self.checkpoints}"
            return closed + [(t, spent) for t, _ in open_] + [(t, spent) for t in waiting]
        for (t, _), share in zip(open_, split(max(0, tranche), [w for _, w in open_]), strict=True):
            t.mark(max(t.grant or 0, t.stats["generated_tokens"]) + share)
        for t in waiting:
            t.mark(max(t.grant or 0, t.stats["generated_tokens"]))
        return closed

    def _why_closed(self, tree: Growth) -> str:
        s = tree.stats
        if s["correct"] >= self.cfg.enough_correct:
            return f"allocator: {s['correct']} correct ends (enough_correct {self.cfg.enough_correct})"
        return f"allocator: hopeless, {s['rollouts']} ends and none correct"
