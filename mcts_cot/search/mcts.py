"""MCTS over reasoning steps: UCT or PUCT selection, expansion by the step policy, optional rollouts, and the
paper's per-tree budget. Verification and backup are shared with every strategy (`growth.py`).

A tree's growth depends only on its own problem and seed (each request carries a seed derived from the
tree and node), so a resumed run grows the same trees as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import random

from mcts_cot.backends.base import Completion, Request, stable_seed
from mcts_cot.policies import Expansion, StepPolicy
from mcts_cot.problems import Problem
from mcts_cot.search.config import SearchConfig
from mcts_cot.search.growth import Growth
from mcts_cot.tree import Node


class TreeSearch(Growth):
    """MCTS on one problem's tree: selection, expansion, rollouts and the paper's per-tree budget."""

    def __init__(self, problem: Problem, prompt_ids: list[int], prompt_text: str, policy: StepPolicy,
                 cfg: SearchConfig):
        super().__init__(problem, prompt_ids, prompt_text, policy, cfg)
        self.rng = random.Random(self.seed)
        self.expanded: set[int] = set()
        self.exhausted: set[int] = set()
        self.widened: dict[int, int] = {}  # node id -> times it was expanded again (selection.widen)
        self.virtual: dict[int, int] = {}  # node id -> virtual visits of leaves in flight below it
        self.busy: dict[int, int] = {}  # leaf id -> its requests in flight (selected leaves are never reselected)
        self.paths: dict[int, list[int]] = {}  # leaf id -> the path its selection added virtual visits to
        self.flying = 0  # requests planned and not yet grown
        self.leaves_out = 0  # selected leaves with requests in flight
        self.rollout_queue: list[Node] = []
        self.idle = False

    # ---------------------------------------------------------------------------------- selection

    def plan(self, slots: int | None = None) -> list[Expansion]:
        """The requests to send now: rollouts queued by earlier results, then selected leaves, `leaves_per_tree`
        of them (a wave) or until `slots` leaves are in flight (the continuous scheduler; leaves in flight keep
        their virtual visits and are not selected again). Nothing while the tree waits for a checkpoint."""
        if self.paused:
            return []
        if not self.flying:  # a wave, or nothing left in flight: no virtual visits, no busy leaves
            self.virtual.clear()
            self.busy.clear()
            self.paths.clear()
            self.leaves_out = 0
        out = [self._rollout(node) for node in self.rollout_queue]
        self.rollout_queue = []
        leaves = self.cfg.selection.leaves_per_tree if slots is None else slots - self.leaves_out
        for _ in range(leaves):
            leaf = self._select()
            if leaf is None:
                break
            exps = self._expand(leaf)
            self.busy[leaf.id] = len(exps)
            self.leaves_out += bool(exps)
            out += exps
        self.flying += len(out)
        self.idle = not self.flying
        if out:
            self.stats["waves"] += 1
        return out

    def _select(self) -> Node | None:
        """Descend from the root through expanded nodes to an unexpanded one (never into a leaf whose
        expansion is in flight), adding virtual visits along the path."""
        nodes, expanded, exhausted, busy = self.tree.nodes, self.expanded, self.exhausted, self.busy
        node = self.tree.root
        path = [node.id]
        while node.id in expanded:
            kids = [nodes[i] for i in node.children if i not in exhausted and i not in busy]
            if not kids:
                return None
            node = self.pick(node, kids)
            path.append(node.id)
        virtual = self.virtual
        for i in path:
            virtual[i] = virtual.get(i, 0) + 1
        self.paths[node.id] = path
        return node

    def _land(self, exp: Expansion) -> None:
        """One request is back: when its leaf has no request left in flight, its path loses its virtual visits."""
        self.flying -= 1
        leaf = exp.node.id
        if exp.action == "rollout" or leaf not in self.busy:
            return
        self.busy[leaf] -= 1
        if not self.busy[leaf]:
            del self.busy[leaf]
            self.leaves_out -= 1
            virtual = self.virtual
            for i in self.paths.pop(leaf):
                virtual[i] -= 1

    def pick(self, parent: Node, kids: list[Node]) -> Node:
        """UCT or PUCT over `kids`; unvisited children first (UCT); exact ties broken by the tree's RNG."""
        virtual = self.virtual
        if virtual:
            get = virtual.get
            visits = [c.N + get(c.id, 0) for c in kids]
            n_parent = max(1, parent.N + get(parent.id, 0))
        else:  # the first leaf of a plan: no virtual visits yet
            visits = [c.N for c in kids]
            n_parent = max(1, parent.N)
        sel = self.cfg.selection
        if sel.rule == "uct":
            if 0 in visits:
                return self.rng.choice([c for c, v in zip(kids, visits, strict=True) if v == 0])
            explore, c_, sqrt = 2 * math.log(n_parent), sel.c, math.sqrt
            scores = [c.W / v + c_ * sqrt(explore / v) for c, v in zip(kids, visits, strict=True)]
        else:
            scores = [(c.W / v if v else 0.0) + sel.c * p * math.sqrt(n_parent) / (1 + v)
                      for c, v, p in zip(kids, visits, self._priors(kids), strict=True)]
        best = max(scores) - 1e-12
        return self.rng.choice([c for c, s in zip(kids, scores, strict=True) if s >= best])

    def _priors(self, kids: list[Node]) -> list[float]:
        logits = [c.logprob / max(1, len(c.token_ids)) ** self.cfg.selection.length_penalty for c in kids]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        return [w / sum(weights) for w in weights]

    # ---------------------------------------------------------------------------------- growth

    def _expand(self, leaf: Node) -> list[Expansion]:
        """The leaf's children requests; a widened node (children already there) gets new samples only, with a
        seed of its own per widening so they are not its first children again."""
        self.expanded.add(leaf.id)
        self.stats["expansions"] += 1
        again = self.widened.get(leaf.id, 0)
        if not again:
            for action, text in self.policy.fixed_children(self.tree, leaf):
                self._add_fixed(leaf, action, text)
        sampling = {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p}
        seed = stable_seed(self.seed, leaf.id, "widen", again) if again else stable_seed(self.seed, leaf.id)
        exps = self.policy.expansions(self.tree, leaf, sampling, seed)
        if not exps:
            self._refresh_exhausted(leaf)
        if self.cfg.selection.width == "adaptive" and leaf.parent is not None and not self._wide(leaf):
            n = self.cfg.selection.min_children
            exps = [dataclasses.replace(e, request=dataclasses.replace(e.request, n=min(n, e.request.n))) for e in exps]
        return exps

    def _wide(self, leaf: Node) -> bool:
        """Adaptive branching (after TreeRL and TreePO): the policy's full width where the leaf's visited
        siblings disagree (their values span at least half the reward range) or the leaf's own step was
        uncertain (mean log-probability per token below `uncertain_logprob`); `min_children` where they agree
        and it was not. The root always gets the full width."""
        sel, r = self.cfg.selection, self.cfg.reward
        values = [s.Q for s in self.tree.children(self.tree.nodes[leaf.parent]) if s.N]
        spread = abs(r.correct - min(r.wrong, r.no_answer)) / 2
        disagree = bool(values) and max(values) - min(values) >= spread
        uncertain = leaf.logprob / max(1, len(leaf.token_ids)) < sel.uncertain_logprob
        return disagree or uncertain

    def _add_fixed(self, parent: Node, action: str, text: str) -> Node:
        node = self.tree.add(parent, kind=action, text=text, token_ids=self.policy.encode(text))
        self._refresh_exhausted(parent)
        return node

    def _rollout(self, node: Node) -> Expansion:
        budget = max(1, min(self.cfg.rollout_max_tokens, self.policy.max_path_tokens - self.policy.path_tokens(self.tree, node)))
        temperature = 0.0 if self.cfg.rollout == "greedy" else self.cfg.temperature
        req = Request(prompt_ids=self.tree.prompt_ids + self.tree.path_ids(node), n=1, max_tokens=budget,
                      temperature=temperature, top_p=self.cfg.top_p, seed=stable_seed(self.seed, node.id, "rollout"))
        return Expansion(node=node, request=req, action="rollout", head_ids=[], head_text="")

    def grow(self, exp: Expansion, completions: list[Completion]) -> list[Node]:
        """Add the completions of one expansion as children (identical siblings merged); return the new
        terminal nodes, which the engine verifies and backs up."""
        self._land(exp)
        parent = exp.node
        seen = {c.text for c in self.tree.children(parent) if c.kind == exp.action}
        terminals = []
        rollout = exp.action == "rollout"
        for comp in completions:
            self.stats["generated_tokens"] += len(comp.token_ids)
            text, ids = self.policy.child(exp, comp)
            if text in seen:
                self.stats["merged"] += 1
                continue
            seen.add(text)
            node = self.tree.add(parent, kind=exp.action, text=text, logprob=comp.logprob, finish=comp.finish,
                                 token_ids=ids)
            node.terminal = self.policy.end_response(node) if rollout else self.policy.classify(self.tree, node)
            if node.terminal is not None:
                self.exhausted.add(node.id)
                terminals.append(node)
            elif self.cfg.rollout != "none":
                self.rollout_queue.append(node)
        self._refresh_exhausted(parent)
        return terminals

    def _refresh_exhausted(self, node: Node) -> None:
        """A node is exhausted when it is expanded and every child is exhausted (or terminal), unless it may
        widen (`selection.widen`): then it becomes a leaf for selection again, to be expanded with new samples.
        Walks up only while a node's state changes: an ancestor's state depends on its children's states alone."""
        nodes, expanded, exhausted = self.tree.nodes, self.expanded, self.exhausted
        while node is not None:
            now = node.id in expanded and all(i in exhausted for i in node.children)
            times = self.widened.get(node.id, 0)
            if now and node.children and times < self.cfg.selection.widen:
                self.widened[node.id] = times + 1
                expanded.discard(node.id)
                now = False
            if now == (node.id in exhausted):
                return
            if now:
                exhausted.add(node.id)
            else:
                exhausted.discard(node.id)
            node = nodes[node.parent] if node.parent is not None else None

    # ---------------------------------------------------------------------------------- backup

    def score(self, node: Node, verdict: str) -> None:
        """The shared backup, then error backtracking: a wrong answer may add children higher up (typed)."""
        super().score(node, verdict)
        if verdict in ("wrong", "unverifiable"):
            for anc, action in self.policy.backtrack(self.tree, node):
                self._add_fixed(anc, action, self.policy.fixed_text(action, len(self.tree.nodes)))

    def outcome(self) -> tuple[str, str] | None:
        """(status, reason) once the tree is done, else None: the paper's per-tree budget rule."""
        b, s = self.cfg.budget, self.stats
        if s["correct"] >= b.success_correct:
            return "success", f"{s['correct']} correct leaves (>= {b.success_correct})"
        if s["rollouts"] > b.min_rollouts and s["correct"] >= b.success_correct_after_min:
            return "success", f"{s['correct']} correct leaves after {s['rollouts']} rollouts"
        if s["rollouts"] >= b.max_rollouts:
            return "failure", f"{s['rollouts']} rollouts (budget {b.max_rollouts}) with {s['correct']} correct"
        if self.tree.root.id in self.exhausted:
            return "failure", f"tree exhausted after {s['rollouts']} rollouts with {s['correct']} correct"
        if self.idle and not self.rollout_queue and not self.paused:
            return "failure", f"no expandable leaf after {s['rollouts']} rollouts"
        return None
