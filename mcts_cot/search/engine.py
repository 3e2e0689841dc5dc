"""The engine: many trees grown at once over one backend and one verifier, continuously or in waves.

`schedule: continuous` (`scheduler.py`): each tree keeps `in_flight_per_tree` requests in flight and submits its
next leaf as soon as one returns. `schedule: waves`: each wave every live tree plans its requests (its strategy
decides which), ALL requests of the wave go to one backend call (vLLM batches them), every new terminal is
verified in one batch and scored. Either way a tree whose strategy says it is done is handed over at once, its
slot going to the next problem. Under the run-level allocator (`allocator.py`) a group of problems grows
together and a step in which every tree waits is a checkpoint: the allocator closes trees or raises their grants.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

from mcts_cot.backends.base import Backend
from mcts_cot.policies import make_policy
from mcts_cot.problems import Problem
from mcts_cot.prompts import Prompter
from mcts_cot.search.allocator import Allocator
from mcts_cot.search.best_of_n import BestOfN
from mcts_cot.search.config import SearchConfig
from mcts_cot.search.fork import Fork
from mcts_cot.search.growth import TreeGrower
from mcts_cot.search.mcts import TreeSearch
from mcts_cot.search.scheduler import Continuous
from mcts_cot.tree import STOPPED, Node, Tree
from mcts_cot.verify import AnswerVerifier

STRATEGIES = {"mcts": TreeSearch, "best_of_n": BestOfN, "fork": Fork}


@dataclass
class WaveReport:
    finished: list[Tree]
    generated_tokens: int
    requests: int


class Engine:
    """Grows many trees of one strategy over one backend (two with a critic model) and one verifier."""

    def __init__(self, cfg: SearchConfig, backends: dict[str, Backend], verifier: AnswerVerifier, tokenizer):
        STRATEGIES[cfg.strategy].check(cfg)
        self.cfg, self.backends, self.verifier, self.tok = cfg, backends, verifier, tokenizer
        self.policy = make_policy(cfg.policy, tokenizer, cfg.seed)
        self.prompter = Prompter(tokenizer, cfg.prompt)
        self.grower = STRATEGIES[cfg.strategy]
        self.waves = 0
        k = cfg.in_flight_per_tree or cfg.selection.leaves_per_tree
        self.scheduler = Continuous(self, k) if cfg.schedule == "continuous" else None

    def start(self, problem: Problem) -> TreeGrower:
        ids = self.prompter(problem.problem)
        return self.grower(problem, ids, self.tok.decode(ids), self.policy, self.cfg)

    def step(self, live: list[TreeGrower]) -> WaveReport:
        """One step of the configured schedule: a continuous poll or a lock-step wave."""
        return self.scheduler.step(live) if self.scheduler else self.wave(live)

    def drop(self, trees: list[Tree]) -> None:
        """Trees finished from outside (allocator, global limits): their requests in flight are cancelled."""
        if self.scheduler:
            self.scheduler.drop(trees)

    def wave(self, live: list[TreeGrower]) -> WaveReport:
        """One wave: plan every live tree, generate in one call per backend, verify, back up."""
        self.waves += 1
        planned = [(ts, exp) for ts in live for exp in ts.plan()]
        tokens = 0
        terminals: list[tuple[TreeGrower, Node]] = []
        for model, items in _group(planned, key=lambda it: it[1].model if it[1].model in self.backends else "main").items():
            results = self.backends[model].generate([exp.request for _, exp in items])
            for (ts, exp), comps in zip(items, results, strict=True):
                tokens += sum(len(c.token_ids) for c in comps)
                terminals += [(ts, node) for node in ts.grow(exp, comps)]
        verdicts = self.verifier.verify_batch([(ts.problem.answer, node.answer) for ts, node in terminals])
        for (ts, node), verdict in zip(terminals, verdicts, strict=True):
            ts.score(node, verdict if node.terminal == "answer" else "no_answer")
        finished = [ts.finish(*done) for ts in live if (done := ts.outcome())]
        return WaveReport(finished=finished, generated_tokens=tokens, requests=len(planned))


def _group(items: list, key) -> dict:
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out


def run_waves(engine: Engine, problems: list[Problem], on_finished, on_wave=None) -> dict:
    """Step the engine's schedule (continuous or waves) until every problem is done. Keep up to
    `concurrent_trees` trees live (with the allocator: one group of problems at a time); finished trees go to
    `on_finished` at once and free their slot. When every tree of a group waits for its grant, the allocator's
    checkpoint closes some and feeds the rest. Global token / wall-time limits stop the run and hand the live
    trees over as `stopped`: unfinished records that a resumed run grows again and export skips."""
    with _spaced_gc():
        return _run(engine, problems, on_finished, on_wave)


@contextmanager
def _spaced_gc(first: int = 50_000, second: int = 20, third: int = 100):
    """Run Python's cycle collector every `first` allocations rather than every 700 while trees grow. The
    search allocates many small containers (nodes, requests, lists) and makes no reference cycles, so what the
    collector does is walk live trees for nothing: at the default thresholds that walk was ~40% of the engine's
    CPU time (bench/bench_engine.py, 1,024 trees). Memory is still freed by reference counting."""
    old = gc.get_threshold()
    gc.set_threshold(first, second, third)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _run(engine: Engine, problems: list[Problem], on_finished, on_wave) -> dict:
    cfg = engine.cfg
    allocated = cfg.allocator.tokens_per_problem is not None
    queue, live, alloc = deque(problems), [], None
    start, tokens, stopped = time.perf_counter(), 0, None
    group_s: float | None = None  # the last group's wall time (none yet: the first group always starts)
    while queue or live:
        if allocated and not live:
            if _no_time_for_a_group(cfg, time.perf_counter() - start, group_s):
                break
            group_start = time.perf_counter()
            live = [engine.start(queue.popleft()) for _ in range(min(cfg.allocator.group, len(queue)))]
            alloc = Allocator(cfg.allocator, live)
            alloc.checkpoint(live)
        while not allocated and queue and len(live) < cfg.concurrent_trees:
            live.append(engine.start(queue.popleft()))
        report = engine.step(live)
        tokens += report.generated_tokens
        finished = report.finished
        live = _without(live, finished)
        if alloc and live and not report.requests:
            closed = alloc.checkpoint(live)
            finished += [ts.finish("success" if ts.stats["correct"] else "failure", why) for ts, why in closed]
            engine.drop(finished)
            live = _without(live, finished)
        on_finished(finished)
        if allocated and not live:
            group_s = time.perf_counter() - group_start
        if on_wave:
            on_wave(engine.waves, tokens, len(live))
        elapsed = time.perf_counter() - start
        if cfg.budget.max_total_tokens is not None and tokens >= cfg.budget.max_total_tokens:
            stopped = f"global token limit {cfg.budget.max_total_tokens} reached"
        elif cfg.budget.max_wall_s is not None and elapsed >= cfg.budget.max_wall_s:
            stopped = f"global wall-time limit {cfg.budget.max_wall_s}s reached"
        if stopped:
            stopped_trees = [ts.finish(STOPPED, stopped) for ts in live]
            engine.drop(stopped_trees)
            on_finished(stopped_trees)
            break
    return {"waves": engine.waves, "generated_tokens": tokens, "seconds": time.perf_counter() - start,
            "stopped": stopped, "unstarted": len(queue)}


def _no_time_for_a_group(cfg: SearchConfig, elapsed: float, last_group_s: float | None) -> bool:
    """`allocator.wall_s`: another group would not fit if it takes as long as the last one did."""
    wall = cfg.allocator.wall_s
    return wall is not None and last_group_s is not None and elapsed + last_group_s > wall


def _without(live: list[TreeGrower], finished: list[Tree]) -> list[TreeGrower]:
    done = {id(t) for t in finished}
    return [ts for ts in live if id(ts.tree) not in done]
