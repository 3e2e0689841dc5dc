"""Batched MCTS over reasoning steps with verified-answer backup.

Many trees grow at once, in waves. Each wave every live tree selects one or more leaves (UCT or PUCT,
unvisited children first, seeded tie-breaks, virtual loss when it picks several), and ALL expansion
requests of the wave go to one backend call with `n` = children per node. New terminal nodes are verified
in one batch and their rewards backed up (visits N and value sum W, mean backup) to the root. A tree that
meets its budget rule is written out at once and its slot goes to the next problem.

A tree's growth depends only on its own problem and seed (each request carries a seed derived from the
tree and node), so a resumed run grows the same trees as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Literal

from mcts_cot.backends.base import Completion, Request
from mcts_cot.config import (
    BackendConfig,
    ModelConfig,
    ProblemsConfig,
    PromptConfig,
    VerifyConfig,
    option,
    section,
)
from mcts_cot.policies import Expansion, PolicyConfig, make_policy
from mcts_cot.problems import Problem
from mcts_cot.tree import Node, Tree


@dataclass
class SelectionConfig:
    """Which leaf a tree expands next."""

    rule: Literal["uct", "puct"] = option("uct", "uct: Q + c·sqrt(2 ln N_parent / N) (the paper's code); puct: Q + c·prior·sqrt(N_parent)/(1+N) with a length-normalised prior (MCTS-DPO).")
    c: float = option(1.414, "Exploration constant (1.414 reproduces the paper's code; MCTS-DPO's PUCT uses 1.0).", ge=0)
    length_penalty: float = option(1.25, "puct: prior = softmax over siblings of logprob / tokens^length_penalty.", ge=0)
    leaves_per_tree: int = option(1, "Leaves a tree expands per wave; more than 1 uses virtual loss to spread them.", ge=1)


@dataclass
class BudgetConfig:
    """When a tree stops (the paper's rule, all numbers configurable) and global limits."""

    success_correct: int = option(8, "Success once this many distinct correct leaves exist.", ge=1)
    min_rollouts: int = option(32, "... or once more than this many rollouts ...", ge=0)
    success_correct_after_min: int = option(4, "... have found at least this many correct leaves.", ge=1)
    max_rollouts: int = option(128, "Give up after this many rollouts (a rollout = one terminal backed up).", ge=1)
    max_total_tokens: int | None = option(None, "Stop the whole run after this many generated tokens (live trees are written as stopped).", ge=1)
    max_wall_s: float | None = option(None, "Stop the whole run after this many seconds (live trees are written as stopped).", gt=0)


@dataclass
class RewardConfig:
    """Rewards backed up from terminal nodes. Unverifiable answers get the wrong-answer reward: a result that
    could not be checked is never rewarded as correct."""

    correct: float = option(1.0, "Reward of a verified-correct answer.")
    wrong: float = option(0.0, "Reward of a wrong (or unverifiable) answer.")
    no_answer: float = option(0.0, "Reward of a path that ended without a final answer.")


@dataclass
class SearchConfig:
    """`mcts-cot search`: grow one verified MCTS tree per problem."""

    model: ModelConfig = section(ModelConfig, "The generating model.")
    critic_model: str | None = option(None, "typed: a second model for actions marked `model: critic` (the paper uses another model for double-check / reflection).")
    backend: BackendConfig = section(BackendConfig, "Generation engine.")
    prompt: PromptConfig = section(PromptConfig, "Chat prompt.")
    problems: ProblemsConfig = section(lambda: ProblemsConfig(split="train"), "Problems to search.")
    verify: VerifyConfig = section(VerifyConfig, "Answer verification pool.")
    policy: PolicyConfig = section(PolicyConfig, "Step policy.")
    selection: SelectionConfig = section(SelectionConfig, "Leaf selection.")
    budget: BudgetConfig = section(BudgetConfig, "Per-tree and global budgets.")
    reward: RewardConfig = section(RewardConfig, "Rewards.")
    temperature: float = option(0.7, "Sampling temperature of expansions (the paper: 0.7).", ge=0)
    top_p: float = option(0.9, "Nucleus mass of expansions (the paper: 0.9).", gt=0, le=1)
    rollout: Literal["none", "sample", "greedy"] = option("none", "From each new non-terminal node, also generate straight to an answer (kept as a real node), or not.")
    rollout_max_tokens: int = option(512, "Most tokens of one rollout.", ge=1)
    concurrent_trees: int = option(64, "Trees grown at once; their requests share one backend call per wave.", ge=1)
    seed: int = option(0, "Seed of selection tie-breaks and of every sampling request.", ge=0)
    out: str = option("runs/search", "Run dir (--out).")


# Keys that may change between a run and its resumption without changing what a tree becomes.
RESUMABLE_KEYS = ("problems.limit", "budget.max_total_tokens", "budget.max_wall_s", "concurrent_trees",
                  "backend.gpu_memory_utilization", "backend.cpu_kv_cache_gib", "backend.batch_size", "verify.workers", "out")


def stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------- one tree


class TreeSearch:
    """The search state of one problem's tree: selection, growth, backup and its budget."""

    def __init__(self, problem: Problem, prompt_ids: list[int], prompt_text: str, policy, cfg: SearchConfig):
        self.problem, self.policy, self.cfg = problem, policy, cfg
        self.tree = Tree(problem=problem.to_dict(), prompt_ids=prompt_ids, prompt_text=prompt_text)
        self.seed = stable_seed(cfg.seed, problem.id)
        self.rng = random.Random(self.seed)
        self.expanded: set[int] = set()
        self.exhausted: set[int] = set()
        self.virtual: Counter[int] = Counter()
        self.rollout_queue: list[Node] = []
        self.idle = False
        self.stats = Counter(rollouts=0, correct=0, wrong=0, no_answer=0, unverifiable=0, expansions=0,
                             generated_tokens=0, merged=0, waves=0)
        self.started = time.perf_counter()

    # ---------------------------------------------------------------------------------- selection

    def plan(self) -> list[Expansion]:
        """This wave's requests: rollouts queued last wave, then up to `leaves_per_tree` selected leaves."""
        self.virtual.clear()
        out = [self._rollout(node) for node in self.rollout_queue]
        self.rollout_queue = []
        busy: set[int] = set()
        for _ in range(self.cfg.selection.leaves_per_tree):
            leaf = self._select(busy)
            if leaf is None:
                break
            busy.add(leaf.id)
            out += self._expand(leaf)
        self.idle = not out
        if out:
            self.stats["waves"] += 1
        return out

    def _select(self, busy: set[int]) -> Node | None:
        """Descend from the root through expanded nodes to an unexpanded one, adding virtual visits."""
        nodes, expanded, exhausted = self.tree.nodes, self.expanded, self.exhausted
        node = self.tree.root
        path = [node.id]
        while node.id in expanded:
            kids = [nodes[i] for i in node.children if i not in exhausted and i not in busy]
            if not kids:
                return None
            node = self.pick(node, kids)
            path.append(node.id)
        for i in path:
            self.virtual[i] += 1
        return node

    def pick(self, parent: Node, kids: list[Node]) -> Node:
        """UCT or PUCT over `kids`; unvisited children first (UCT); exact ties broken by the tree's RNG."""
        virtual = self.virtual
        visits = [c.N + virtual[c.id] for c in kids]
        sel = self.cfg.selection
        n_parent = max(1, parent.N + virtual[parent.id])
        if sel.rule == "uct":
            if 0 in visits:
                return self.rng.choice([c for c, v in zip(kids, visits, strict=True) if v == 0])
            explore = 2 * math.log(n_parent)
            scores = [c.W / v + sel.c * math.sqrt(explore / v) for c, v in zip(kids, visits, strict=True)]
        else:
            scores = [(c.W / v if v else 0.0) + sel.c * p * math.sqrt(n_parent) / (1 + v)
                      for c, v, p in zip(kids, visits, self._priors(kids), strict=True)]
        best = max(scores)
        return self.rng.choice([c for c, s in zip(kids, scores, strict=True) if s >= best - 1e-12])

    def _priors(self, kids: list[Node]) -> list[float]:
        logits = [c.logprob / max(1, len(c.token_ids)) ** self.cfg.selection.length_penalty for c in kids]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        return [w / sum(weights) for w in weights]

    # ---------------------------------------------------------------------------------- growth

    def _expand(self, leaf: Node) -> list[Expansion]:
        self.expanded.add(leaf.id)
        self.stats["expansions"] += 1
        for action, text in self.policy.fixed_children(self.tree, leaf):
            self._add_fixed(leaf, action, text)
        sampling = {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p}
        exps = self.policy.expansions(self.tree, leaf, sampling, stable_seed(self.seed, leaf.id))
        if not exps:
            self._refresh_exhausted(leaf)
        return exps

    def _add_fixed(self, parent: Node, action: str, text: str) -> Node:
        node = self.tree.add(parent, kind=action, text=text, token_ids=self.policy.encode(text))
        self._refresh_exhausted(parent)
        return node

    def _rollout(self, node: Node) -> Expansion:
        budget = max(1, min(self.cfg.rollout_max_tokens, self.policy.cfg.max_path_tokens - self.policy.path_tokens(self.tree, node)))
        temperature = 0.0 if self.cfg.rollout == "greedy" else self.cfg.temperature
        req = Request(prompt_ids=self.tree.prompt_ids + self.tree.path_ids(node), n=1, max_tokens=budget,
                      temperature=temperature, top_p=self.cfg.top_p, seed=stable_seed(self.seed, node.id, "rollout"))
        return Expansion(node=node, request=req, action="rollout", head_ids=[], head_text="")

    def grow(self, exp: Expansion, completions: list[Completion]) -> list[Node]:
        """Add the completions of one expansion as children (identical siblings merged); return the new
        terminal nodes, which the engine verifies and backs up."""
        parent = exp.node
        seen = {c.text for c in self.tree.children(parent) if c.kind == exp.action}
        terminals = []
        sep = self.policy.cfg.separator if self.policy.cfg.kind == "typed" and exp.action != "rollout" else ""
        for comp in completions:
            self.stats["generated_tokens"] += len(comp.token_ids)
            tail = sep if comp.finish == "stop" else ""
            text = exp.head_text + comp.text + tail
            if text in seen:
                self.stats["merged"] += 1
                continue
            seen.add(text)
            node = self.tree.add(parent, kind=exp.action, text=text, logprob=comp.logprob, finish=comp.finish,
                                 token_ids=exp.head_ids + comp.token_ids + self.policy.encode(tail))
            node.terminal = self.policy.classify(self.tree, node) if exp.action != "rollout" else self._rollout_end(node)
            if node.terminal is not None:
                self.exhausted.add(node.id)
                terminals.append(node)
            elif self.cfg.rollout != "none":
                self.rollout_queue.append(node)
        self._refresh_exhausted(parent)
        return terminals

    def _rollout_end(self, node: Node) -> str:
        from mcts_cot.verify import extract_answer

        node.answer = extract_answer(node.text)
        return "answer" if node.answer is not None else (node.finish if node.finish in ("eos", "length") else "max_tokens")

    def _refresh_exhausted(self, node: Node) -> None:
        """A node is exhausted when it is expanded and every child is exhausted (or terminal). Walks up only
        while a node's state changes: an ancestor's state depends on its children's states alone."""
        nodes, expanded, exhausted = self.tree.nodes, self.expanded, self.exhausted
        while node is not None:
            now = node.id in expanded and all(i in exhausted for i in node.children)
            if now == (node.id in exhausted):
                return
            if now:
                exhausted.add(node.id)
            else:
                exhausted.discard(node.id)
            node = nodes[node.parent] if node.parent is not None else None

    # ---------------------------------------------------------------------------------- backup

    def score(self, node: Node, verdict: str) -> None:
        """Record a terminal's verdict and back its reward up to the root (mean backup)."""
        node.verdict = verdict
        self.stats[verdict] += 1
        self.stats["rollouts"] += 1
        reward = {"correct": self.cfg.reward.correct, "no_answer": self.cfg.reward.no_answer}.get(verdict, self.cfg.reward.wrong)
        n: Node | None = node
        while n is not None:
            n.N += 1
            n.W += reward
            n = self.tree.nodes[n.parent] if n.parent is not None else None
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
        return None

    def finish(self, status: str, reason: str) -> Tree:
        self.tree.status, self.tree.reason = status, reason
        self.tree.stats = {**self.stats, "nodes": len(self.tree.nodes),
                           "seconds": round(time.perf_counter() - self.started, 3)}
        return self.tree


# --------------------------------------------------------------------------------------------- the engine


@dataclass
class WaveReport:
    finished: list[Tree]
    generated_tokens: int


class Engine:
    """Grows many trees in lock-step waves over one backend (two with a critic model) and one verifier."""

    def __init__(self, cfg: SearchConfig, backends: dict, verifier, tokenizer):
        self.cfg, self.backends, self.verifier, self.tok = cfg, backends, verifier, tokenizer
        self.policy = make_policy(cfg.policy, tokenizer, cfg.seed)
        self.waves = 0

    def start(self, problem: Problem) -> TreeSearch:
        from mcts_cot.prompts import prompt_ids

        ids = prompt_ids(self.tok, self.cfg.prompt, problem.problem)
        return TreeSearch(problem, ids, self.tok.decode(ids), self.policy, self.cfg)

    def wave(self, live: list[TreeSearch]) -> WaveReport:
        """One wave: plan every live tree, generate in one call per backend, verify, back up."""
        self.waves += 1
        planned = [(ts, exp) for ts in live for exp in ts.plan()]
        tokens = 0
        terminals: list[tuple[TreeSearch, Node]] = []
        for model, items in _group(planned, key=lambda it: it[1].model if it[1].model in self.backends else "main").items():
            results = self.backends[model].generate([exp.request for _, exp in items])
            for (ts, exp), comps in zip(items, results, strict=True):
                tokens += sum(len(c.token_ids) for c in comps)
                terminals += [(ts, node) for node in ts.grow(exp, comps)]
        verdicts = self.verifier.verify_batch([(ts.problem.answer, node.answer) for ts, node in terminals])
        for (ts, node), verdict in zip(terminals, verdicts, strict=True):
            ts.score(node, verdict if node.terminal == "answer" else "no_answer")
        finished = []
        for ts in live:
            done = ts.outcome()
            if done is None and ts.idle and not ts.rollout_queue:
                done = ("failure", f"no expandable leaf after {ts.stats['rollouts']} rollouts")
            if done:
                finished.append(ts.finish(*done))
        return WaveReport(finished=finished, generated_tokens=tokens)


def _group(items: list, key) -> dict:
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out


def run_waves(engine: Engine, problems: list[Problem], on_finished, on_wave=None) -> dict:
    """Keep up to `concurrent_trees` trees live; finished trees go to `on_finished` at once and free their
    slot. Global token / wall-time limits stop the run and hand the live trees over as `stopped`."""
    cfg = engine.cfg
    queue, live = deque(problems), []
    start, tokens, stopped = time.perf_counter(), 0, None
    while queue or live:
        while queue and len(live) < cfg.concurrent_trees:
            live.append(engine.start(queue.popleft()))
        report = engine.wave(live)
        tokens += report.generated_tokens
        done_ids = {id(t) for t in report.finished}
        live = [ts for ts in live if id(ts.tree) not in done_ids]
        on_finished(report.finished)
        if on_wave:
            on_wave(engine.waves, tokens, len(live))
        elapsed = time.perf_counter() - start
        if cfg.budget.max_total_tokens is not None and tokens >= cfg.budget.max_total_tokens:
            stopped = f"global token limit {cfg.budget.max_total_tokens} reached"
        elif cfg.budget.max_wall_s is not None and elapsed >= cfg.budget.max_wall_s:
            stopped = f"global wall-time limit {cfg.budget.max_wall_s}s reached"
        if stopped:
            on_finished([ts.finish("stopped", stopped) for ts in live])
            break
    return {"waves": engine.waves, "generated_tokens": tokens, "seconds": time.perf_counter() - start,
            "stopped": stopped, "unstarted": len(queue)}
