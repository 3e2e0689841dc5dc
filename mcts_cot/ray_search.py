"""`mcts-cot search --ray`: engine actors grow the trees, this process alone writes the run dir.

Each `EngineActor` builds its own backend and verifier pool and grows trees with the same `Engine` as a single
process: without the allocator it keeps `concurrent_trees` trees live, taking the next problem as soon as a tree
finishes; under the allocator it grows one group at a time through `run_waves` (a group's trees depend only on
the group). The driver (`search`) holds the run dir and its lock as `run._search` does: it hands problems (or
groups) to the actors from one queue (`ray_pool.dispatch`), appends each finished tree as it arrives, keeps the
manifest and the progress line, and gives the work of an actor that died to a fresh one. A tree depends only
on its problem and seed, so the run dir equals a single-process run's, whatever actor grew what.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from types import SimpleNamespace

from rich.console import Console

from mcts_cot.backends import BackendFactory, BackendStats
from mcts_cot.errors import UserError
from mcts_cot.problems import Problem
from mcts_cot.progress import progress_bar
from mcts_cot.ray_pool import (
    ActorSlots,
    BackendActor,
    RemoteBackend,
    add_stats,
    connect,
    dispatch,
    factory_for_actors,
    import_ray,
    placement,
    remote_class,
)
from mcts_cot.search import Engine, SearchConfig, run_waves
from mcts_cot.store import RunDir
from mcts_cot.tree import Tree

LOOKAHEAD = 2  # problems queued on an actor beyond its live trees, so a finished tree's slot refills at once


class EngineActor:
    """Grows the trees of the units (lists of problems) that `grow` calls hand in, from any number of
    concurrent calls, in one engine loop thread; each call returns its unit's finished trees."""

    def __init__(self, cfg: SearchConfig, make: BackendFactory, critic=None):
        from mcts_cot.verify import Verifier

        self.cfg = cfg
        self.backends = {"main": make(cfg.model, cfg.backend)}
        if critic is not None:
            self.backends["critic"] = RemoteBackend(critic)
        self.verifier = Verifier.from_config(cfg.verify)
        self.engine = Engine(cfg, self.backends, self.verifier, self.backends["main"].tokenizer)
        self.inbox: deque[tuple[list[Problem], Future]] = deque()
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.open: set[Future] = set()
        threading.Thread(target=self._run, daemon=True).start()

    def grow(self, problems: list[Problem]) -> list[Tree]:
        future: Future = Future()
        with self.cond:
            if self.error is not None:
                raise self.error
            self.inbox.append((list(problems), future))
            self.open.add(future)
            self.cond.notify()
        return future.result()

    def stats(self) -> tuple[BackendStats, int]:
        """The main backend's counts and the engine's steps."""
        return self.backends["main"].stats, self.engine.waves

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.verifier.close()

    def _run(self) -> None:
        try:
            self._groups() if self.cfg.allocator.tokens_per_problem is not None else self._trees()
        except BaseException as exc:  # the growth failed: every call waiting on this actor gets the error
            with self.cond:
                self.error = exc
                for future in self.open:
                    future.set_exception(exc)

    def _take(self, block: bool) -> list[tuple[list[Problem], Future]]:
        with self.cond:
            while block and not self.inbox:
                self.cond.wait()
            units, self.inbox = list(self.inbox), deque()
        return units

    def _resolve(self, future: Future, trees: list[Tree]) -> None:
        with self.cond:
            self.open.discard(future)
        future.set_result(trees)

    def _groups(self) -> None:
        """Allocator: one group at a time, as a single process grows them."""
        while True:
            for problems, future in self._take(block=True):
                trees: list[Tree] = []
                run_waves(self.engine, problems, trees.extend)
                self._resolve(future, trees)

    def _trees(self) -> None:
        """Up to `concurrent_trees` live trees, refilled from the units as trees finish (`run_waves` without the
        global limits, which a Ray run refuses)."""
        pending: deque[tuple[Problem, list]] = deque()  # (problem, its unit: [future, trees, problems left])
        live, unit_of = [], {}
        while True:
            for problems, future in self._take(block=not (live or pending)):
                unit = [future, [], len(problems)]
                pending += [(p, unit) for p in problems]
                if not problems:
                    self._resolve(future, [])
            while pending and len(live) < self.cfg.concurrent_trees:
                problem, unit = pending.popleft()
                grower = self.engine.start(problem)
                unit_of[id(grower.tree)] = unit
                live.append(grower)
            finished = self.engine.step(live).finished
            done = {id(t) for t in finished}
            live = [ts for ts in live if id(ts.tree) not in done]
            for tree in finished:
                unit = unit_of.pop(id(tree))
                unit[1].append(tree)
                unit[2] -= 1
                if unit[2] == 0:
                    self._resolve(unit[0], unit[1])


def check(cfg: SearchConfig) -> None:
    """Global limits need one view of the whole run's tokens and time, which a Ray run does not keep."""
    limits = {"budget.max_total_tokens": cfg.budget.max_total_tokens, "budget.max_wall_s": cfg.budget.max_wall_s,
              "allocator.wall_s": cfg.allocator.wall_s}
    given = [k for k, v in limits.items() if v is not None]
    if given:
        raise UserError(f"{', '.join(given)}: not supported with --ray (ray.address); unset it, or search in one "
                        "process")


def units(cfg: SearchConfig, todo: list[Problem]) -> tuple[list[list[Problem]], int]:
    """The units of work and how many each actor holds at once: whole allocator groups one at a time, else
    single problems, `concurrent_trees` live plus a few queued."""
    if cfg.allocator.tokens_per_problem is not None:
        from mcts_cot.search.allocator import groups

        return groups(todo, cfg.allocator.group), 1
    return [[p] for p in todo], cfg.concurrent_trees + LOOKAHEAD


def start_actors(cfg: SearchConfig, make: BackendFactory) -> tuple[ActorSlots, ActorSlots | None]:
    """The engine actors (and the critic model's, which they share round robin)."""
    count, options = placement(cfg.ray, cfg.backend)
    make = factory_for_actors(make)
    critics = None
    if cfg.critic_model:
        import dataclasses

        critic_model = dataclasses.replace(cfg.model, name=cfg.critic_model)
        critic_cls = remote_class(BackendActor, **options)
        critics = ActorSlots(lambda _i: critic_cls.remote(make, critic_model, cfg.backend), cfg.ray.critic_actors, 0)
    per_actor = units(cfg, [])[1]
    engine_cls = remote_class(EngineActor, max_concurrency=per_actor + 2, **options)

    def start(slot: int):
        critic = critics.actors[slot % len(critics.actors)] if critics else None
        return engine_cls.remote(cfg, make, critic)

    return ActorSlots(start, count, cfg.ray.max_replacements), critics


def search(cfg: SearchConfig, run: RunDir, problems: list[Problem], load_report, dry_run: bool,
           console: Console, make: BackendFactory) -> dict:
    """`run._search` with the trees grown on engine actors; returns the manifest."""
    from mcts_cot.run import _manifest, _record_failure, _Tally, _todo

    check(cfg)
    done = run.finished_ids()
    todo = _todo(cfg, problems, done)
    tally = _Tally(total=len(problems), done_before=len(done))
    stats = BackendStats()
    backends = {"main": SimpleNamespace(stats=stats)}
    run.write_manifest(_manifest(cfg, run, tally, backends, load_report, extra={"status": "running"}))
    connected, slots, critics = False, None, None
    try:
        connected = connect(cfg.ray)
        slots, critics = start_actors(cfg, make)
        slots.ready()  # the clock and the progress line start once the engines are up
        driver = _Driver(cfg, run, tally, done, slots, console)
        with progress_bar(console) as bar:
            driver.bar, driver.task = bar, bar.add_task("search", total=len(problems), completed=len(done), info="")
            work, per_actor = units(cfg, todo)
            dispatch(slots, work, lambda actor, unit: actor.grow.remote(unit), driver.on_done, per_actor,
                     on_death=driver.on_death)
        steps = driver.collect_stats(stats)
    except BaseException as exc:
        _record_failure(cfg, run, tally, backends, load_report, exc)
        raise
    finally:
        for group in (slots, critics):
            if group:
                group.close()
        if connected:
            import_ray().shutdown()
    driver.log_actors()
    manifest = _manifest(cfg, run, tally, backends, load_report, extra={
        "status": "complete", "stopped": None, "waves": steps, "wall_s": round(driver.seconds(), 2),
        "repaired_bytes": run.repaired_bytes, "unstarted": 0, "dry_run": dry_run, "out": str(run.path),
        "ray": driver.report()})
    run.write_manifest(manifest)
    return manifest


class _Driver:
    """The driver's side of a Ray search: writes what comes back, counts it per actor, logs deaths."""

    def __init__(self, cfg: SearchConfig, run: RunDir, tally, done: set[str], slots: ActorSlots, console: Console):
        self.cfg, self.run, self.tally, self.written, self.slots, self.console = cfg, run, tally, set(done), slots, console
        self.trees = [0] * len(slots.actors)
        self.tokens = 0
        self.bar = self.task = None
        self.start, self.cpu = time.perf_counter(), time.process_time()

    def on_done(self, _unit, trees: list[Tree], slot: int) -> None:
        """Append a unit's trees not yet written (a group regrown on resume, a unit re-run after a death)."""
        trees = [t for t in trees if str(t.problem["id"]) not in self.written]
        self.run.append(trees)
        self.written.update(str(t.problem["id"]) for t in trees)
        self.tally.add(trees)
        self.trees[slot] += len(trees)
        self.tokens += sum(t.stats.get("generated_tokens", 0) for t in trees)
        self.bar.update(self.task, completed=self.tally.done_before + self.tally.finished, info=self.line())

    def on_death(self, slot: int, why: str) -> None:
        self.console.print(f"ray: engine actor {slot} died ({why}); its unfinished problems go back to the queue",
                           highlight=False, markup=False, soft_wrap=True)

    def line(self) -> str:
        solved = f"{self.tally.solved / self.tally.finished:.0%}" if self.tally.finished else "-"
        return (f"{len(self.slots.live())} actors · trees per actor {'/'.join(map(str, self.trees))}"
                f" · {self.tokens / max(1e-9, self.seconds()):.0f} tok/s · solved {solved}")

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def collect_stats(self, total: BackendStats) -> int:
        """Sum the live actors' backend counts into `total` (an actor that died took its counts with it);
        returns their engine steps."""
        self.cpu = time.process_time() - self.cpu  # the driver's CPU while the trees grew
        ray = import_ray()
        steps = 0
        for part, waves in ray.get([self.slots.actors[i].stats.remote() for i in self.slots.live()]):
            add_stats(total, part)
            steps += waves
        total.seconds = self.seconds()  # actors generate side by side: tokens/s is the run's
        return steps

    def report(self) -> dict:
        finished = max(1, sum(self.trees))
        return {"address": self.cfg.ray.address, "actors": len(self.slots.actors), "trees_per_actor": self.trees,
                "deaths": self.slots.deaths,
                "driver_cpu_ms_per_tree": round(1000 * self.cpu / finished, 3)}

    def log_actors(self) -> None:
        for slot, n in enumerate(self.trees):
            self.console.print(f"ray: engine actor {slot}: {n} trees", highlight=False, markup=False)
        for death in self.slots.deaths:
            self.console.print(f"ray: replaced {death}", highlight=False, markup=False, soft_wrap=True)
