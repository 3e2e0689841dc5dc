"""Continuous scheduling: every tree keeps up to k requests in flight and moves on as soon as one returns.

Lock-step waves (`Engine.wave`) wait for the slowest step of the wave before any tree moves on; here a
request that finishes is grown into its tree at once, its new answers are verified in the background (the
verifier's own thread; generation goes on meanwhile), the reward is backed up and the tree's next leaf is
submitted, while the backend keeps running everything else (vLLM's continuous batching, request by request:
`Backend.submit` / `poll` / `cancel`). A tree that finishes cancels what it still has in flight, so its
sequences leave the batch at once.

Determinism: a tree applies its results in the order it submitted them, and it plans only at fixed points
(when it starts, after each applied result, after an allocator checkpoint), never because time passed. A
tree's growth then depends only on its own results and seeds, not on which request the backend finished
first. A step that ends with nothing in flight, nothing being verified and nothing planned is quiet: every
live tree waits, which is the run-level allocator's checkpoint, as a wave that sends nothing is.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from mcts_cot.backends.base import request_level
from mcts_cot.policies import Expansion
from mcts_cot.search.growth import TreeGrower
from mcts_cot.tree import Node, Tree


@dataclass
class Flight:
    """One submitted request of a tree; `completions` is set when the backend returns it."""

    exp: Expansion
    model: str
    rid: int
    completions: list | None = None


@dataclass
class Lane:
    """One live tree's requests in submission order, and the verdicts it waits for."""

    tree: TreeGrower
    flights: deque[Flight] = field(default_factory=deque)
    due: bool = True  # at a planning point: plan before anything else
    checking: list[Node] = field(default_factory=list)  # answers being verified; the tree waits for them
    verdicts: Future | None = None
    offset: int = 0  # where this lane's answers start in the verifier batch of `verdicts`
    closed: bool = False  # finished and released


class Continuous:
    """Drives the engine's trees request by request (`step`, for `run_waves`); `k` requests in flight per tree."""

    def __init__(self, engine, k: int):
        self.engine, self.k = engine, k
        self.backends = {name: request_level(b) for name, b in engine.backends.items()}
        self.background = hasattr(engine.verifier, "submit")  # verifies beside generation (the worker pool)
        self.lanes: dict[int, Lane] = {}  # id(tree grower) -> lane
        self.owner: dict[tuple[str, int], Flight] = {}
        self.finished: list[Tree] = []
        self.tokens = 0
        self.quiet = False

    def step(self, live: list[TreeGrower]):
        """Plan where trees are due, advance every backend one poll, apply what came back; report the trees
        that finished and whether anything is still under way (0 requests: every live tree waits)."""
        from mcts_cot.search.engine import WaveReport

        self.engine.waves += 1
        self._sync(live)
        sent = sum(self._plan(lane) for lane in list(self.lanes.values()) if lane.due or self.quiet)
        self._poll()
        self._apply(list(self.lanes.values()))
        if not self.owner:  # nothing left to generate: wait for the verifier rather than spin
            self._await_verdicts()
        busy = sent + len(self.owner) + sum(lane.verdicts is not None for lane in self.lanes.values())
        self.quiet = not busy
        finished, tokens = self.finished, self.tokens
        self.finished, self.tokens = [], 0
        return WaveReport(finished=finished, generated_tokens=tokens, requests=busy)

    def drop(self, trees: list[Tree]) -> None:
        """Trees finished outside the scheduler (an allocator checkpoint, a global limit): cancel their requests."""
        done = {id(t) for t in trees}
        for key, lane in list(self.lanes.items()):
            if id(lane.tree.tree) in done:
                self._release(key, lane)

    # ------------------------------------------------------------------------------------------ internals

    def _sync(self, live: list[TreeGrower]) -> None:
        for ts in live:
            if id(ts) not in self.lanes:
                self.lanes[id(ts)] = Lane(ts)

    def _plan(self, lane: Lane) -> int:
        """A planning point: submit the tree's next requests; a tree with nothing to send and nothing in
        flight is settled (finished, or waiting for a checkpoint)."""
        lane.due = False
        backends = self.backends
        for exp in lane.tree.plan(self.k):
            model = exp.model if exp.model in backends else "main"
            flight = Flight(exp, model, backends[model].submit(exp.request))
            lane.flights.append(flight)
            self.owner[(model, flight.rid)] = flight
        if not lane.flights:
            self._settle(lane)
        return len(lane.flights)

    def _poll(self) -> None:
        for model in {m for m, _ in self.owner}:
            for rid, completions in self.backends[model].poll():
                flight = self.owner.pop((model, rid), None)
                if flight is not None:  # None: cancelled after it finished
                    flight.completions = completions

    def _apply(self, lanes: list[Lane]) -> None:
        """Apply, per tree and in submission order, every result that came back, in rounds over all trees: grow
        one result per tree, verify the round's answers in one batch, back up, plan. A tree whose next result is
        in already goes round again. With a background verifier (`submit`) the trees with answers wait for their
        verdicts while the others go on; those verdicts are scored in a later round. Phases over all trees at
        once rather than tree by tree: the same work, ~30% less CPU (the interpreter stays in one loop)."""
        while lanes:
            moved, checking = [], []
            for lane in lanes:
                if lane.closed:
                    continue
                if lane.verdicts is not None:
                    if lane.verdicts.done():
                        self._score(lane, lane.checking, lane.verdicts.result()[lane.offset:lane.offset + len(lane.checking)])
                        lane.checking, lane.verdicts = [], None
                        moved.append(lane)
                elif lane.flights and lane.flights[0].completions is not None:
                    lane.checking = self._grow(lane)
                    checking += [(lane, node) for node in lane.checking]
                    if not lane.checking:
                        moved.append(lane)
            waiting = self._verify(checking, moved)
            for lane in moved:
                self._after_result(lane)
            lanes = [lane for lane in moved if lane.flights and lane.flights[0].completions is not None]
            lanes += [lane for lane in waiting if lane.verdicts.done()]

    def _grow(self, lane: Lane) -> list[Node]:
        """Grow the tree's oldest result; back up the terminals without an answer; return the answers."""
        ts, flight = lane.tree, lane.flights.popleft()
        spent = ts.stats["generated_tokens"]
        terminals = ts.grow(flight.exp, flight.completions)
        self.tokens += ts.stats["generated_tokens"] - spent
        answers = []
        for node in terminals:
            if node.terminal == "answer":
                answers.append(node)
            else:
                ts.score(node, "no_answer")
        return answers

    def _verify(self, checking: list[tuple[Lane, Node]], moved: list[Lane]) -> list[Lane]:
        """One verifier batch for a round's answers: scored at once (a plain verifier; their trees join `moved`),
        or sent to the background (their trees wait; returned)."""
        if not checking:
            return []
        items = [(lane.tree.problem.answer, node.answer) for lane, node in checking]
        lanes = list({id(lane): lane for lane, _ in checking}.values())
        if self.background:
            future = self.engine.verifier.submit(items)
            for i, (lane, _) in enumerate(checking):
                if lane.verdicts is None:
                    lane.verdicts, lane.offset = future, i
            return lanes
        for (lane, node), verdict in zip(checking, self.engine.verifier.verify_batch(items), strict=True):
            lane.tree.score(node, verdict)
        for lane in lanes:
            lane.checking = []
        moved += lanes
        return []

    @staticmethod
    def _score(lane: Lane, nodes: list[Node], verdicts: list[str]) -> None:
        for node, verdict in zip(nodes, verdicts, strict=True):
            lane.tree.score(node, verdict)

    def _after_result(self, lane: Lane) -> None:
        if not self._settle(lane):
            self._plan(lane)

    def _settle(self, lane: Lane) -> bool:
        """Finish the tree if its strategy says it is done: its requests still in flight are cancelled."""
        done = lane.tree.outcome()
        if done:
            self.finished.append(lane.tree.finish(*done))
            self._release(id(lane.tree), lane)
        return bool(done)

    def _release(self, key: int, lane: Lane) -> None:
        del self.lanes[key]
        lane.closed = True
        cancel: dict[str, list[int]] = {}
        for flight in lane.flights:
            if self.owner.pop((flight.model, flight.rid), None) is not None:
                cancel.setdefault(flight.model, []).append(flight.rid)
        for model, rids in cancel.items():
            self.backends[model].cancel(rids)

    def _await_verdicts(self) -> None:
        pending = {id(lane.verdicts): lane.verdicts for lane in self.lanes.values() if lane.verdicts is not None}
        if pending:
            wait(list(pending.values()), return_when=FIRST_COMPLETED)
            self._apply([lane for lane in self.lanes.values() if lane.verdicts is not None and lane.verdicts.done()])

