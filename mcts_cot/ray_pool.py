"""Engine actors on Ray (`ray.*`): joining the cluster, sizing the actors, and one queue that hands work to
actors as they free up and gives a dead actor's work to another.

Ray owns the cluster, the placement (one actor per GPU, or per `backend.tensor_parallel_size` GPUs, through
`num_gpus`, so Ray pins each actor's CUDA_VISIBLE_DEVICES), the transport and the failure signal (a call on a
dead actor raises `RayActorError`). This module only decides what to send where: `dispatch` keeps each actor
supplied from one queue (`ray.wait` over the calls in flight), so a fast actor takes more work than a slow one,
and a unit whose actor died goes back to the queue for a fresh actor or the others, once and whole. Units are
idempotent (a tree depends only on its problem and seed), so a re-run unit gives what the lost one would have.

`BackendActor` hosts one backend for `generate` calls: the workers of a Ray eval (`RayBackend`) and a search's
critic model. The search's own actors (`ray_search.EngineActor`) grow whole trees.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import fields

from mcts_cot.backends import BackendFactory, BackendStats, Completion, Request
from mcts_cot.config import BackendConfig, ModelConfig, RayConfig
from mcts_cot.errors import UserError


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("ray.address is set (--ray) but Ray is not installed: pip install -e '.[ray]' "
                        "(or pip install 'ray>=2.40')") from None
    return ray


def connect(cfg: RayConfig) -> bool:
    """Join (or start, for `local`) the cluster named by `ray.address`; True when this call connected, so the
    caller disconnects at the end. A process already connected (a test, a notebook) keeps its connection."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=True)
    except ConnectionError as exc:
        raise UserError(f"ray.address {cfg.address!r}: no Ray cluster there ({exc}); start one with "
                        "`ray start --head`, or use --ray local") from None
    return True


def factory_for_actors(make: BackendFactory) -> BackendFactory:
    """The factory the actors build their engines with. An engine pool's engines live in this process and
    would hold its GPU: they are shut, and the actors build their own with the pool's factory."""
    from mcts_cot.loop.engines import EnginePool

    if isinstance(make, EnginePool):
        make.release()
        return make.make
    return make


def placement(cfg: RayConfig, backend: BackendConfig) -> tuple[int, dict]:
    """How many engine actors, and the resources each holds; a request the cluster cannot meet is one error
    line (Ray itself would wait for ever)."""
    ray = import_ray()
    have = ray.cluster_resources()
    gpus_here, cpus_here = have.get("GPU", 0.0), have.get("CPU", 0.0)
    gpus = cfg.gpus_per_actor
    if gpus is None:
        gpus = float(backend.tensor_parallel_size) if gpus_here and backend.name != "scripted" else 0.0
    actors = cfg.actors or (int(gpus_here // gpus) if gpus else 1)
    if actors < 1 or actors * gpus > gpus_here or actors * cfg.cpus_per_actor > cpus_here:
        raise UserError(f"ray: {max(actors, 1)} actors × ({gpus:g} GPUs, {cfg.cpus_per_actor:g} CPUs) do not fit "
                        f"the cluster's {gpus_here:g} GPUs and {cpus_here:g} CPUs; set ray.actors, "
                        "ray.gpus_per_actor or ray.cpus_per_actor")
    return actors, {"num_gpus": gpus, "num_cpus": cfg.cpus_per_actor}


class ActorSlots:
    """The live actors of one kind, one per slot; `replace` starts a fresh actor in a dead one's slot while
    the replacement budget lasts, else retires the slot."""

    def __init__(self, start: Callable[[int], object], count: int, replacements: int | None):
        self.start = start
        self.actors: list[object | None] = [start(i) for i in range(count)]
        self.generation = [0] * count
        self.left = count if replacements is None else replacements
        self.deaths: list[str] = []

    def ready(self) -> None:
        """Wait until every actor has built its engine (an engine that cannot start is the run's error here)."""
        import_ray().get([self.actors[i].__ray_ready__.remote() for i in self.live()])

    def live(self) -> list[int]:
        return [i for i, a in enumerate(self.actors) if a is not None]

    def replace(self, slot: int, why: str) -> None:
        ray = import_ray()
        ray.kill(self.actors[slot], no_restart=True)
        self.deaths.append(f"actor {slot}: {why}")
        self.generation[slot] += 1
        if self.left > 0:
            self.left -= 1
            self.actors[slot] = self.start(slot)
        else:
            self.actors[slot] = None
        if not self.live():
            raise UserError(f"ray: every engine actor died ({'; '.join(self.deaths[-3:])})")

    def close(self) -> None:
        """Let each actor shut its engine down (a vLLM engine frees its GPU and its own processes), then end it."""
        ray = import_ray()
        live = [self.actors[i] for i in self.live()]
        try:
            ray.get([actor.close.remote() for actor in live], timeout=120)
        except Exception:  # best effort: an actor that is dead or hangs is killed below all the same
            pass
        for actor in live:
            ray.kill(actor, no_restart=True)
        self.actors = [None] * len(self.actors)


def dispatch(slots: ActorSlots, units: list, call: Callable, on_done: Callable, per_actor: int,
             on_death: Callable[[int, str], None] | None = None) -> None:
    """Run every unit: `call(actor, unit)` returns a Ray ref, at most `per_actor` in flight per actor, the next
    unit going to the least loaded actor (whichever frees up first). `on_done(unit, result, slot)` gets each
    result as it comes. A unit whose actor died goes back to the front of the queue, and the actor is replaced
    (once per death); an actor that cannot start, and any other error, is the run's error."""
    ray = import_ray()
    from ray.exceptions import RayActorError

    queue, flying = deque(units), {}  # ref -> (slot, generation, unit)
    load = [0] * len(slots.actors)
    while queue or flying:
        while queue:
            slot = min(slots.live(), key=lambda i: load[i])  # the least loaded: a short run spreads over all
            if load[slot] >= per_actor:
                break
            unit = queue.popleft()
            flying[call(slots.actors[slot], unit)] = (slot, slots.generation[slot], unit)
            load[slot] += 1
        ready, _ = ray.wait(list(flying), num_returns=1)
        slot, generation, unit = flying.pop(ready[0])
        current = generation == slots.generation[slot]  # else its actor was replaced since
        load[slot] -= current
        try:
            result = ray.get(ready[0])
        except RayActorError as exc:
            if exc.actor_init_failed:  # the engine cannot start (a bad model path, an import error): the run's error
                raise
            queue.appendleft(unit)
            if current:  # the first of its calls to fail: replace it once
                why = str(exc).splitlines()[0][:200]
                if on_death:
                    on_death(slot, why)
                slots.replace(slot, why)
                load[slot] = 0
            continue
        on_done(unit, result, slot)


class BackendActor:
    """One backend in its own process (`ray.remote`'d by `remote_class`), for `generate` calls."""

    def __init__(self, make: BackendFactory, model: ModelConfig, backend: BackendConfig):
        self.backend = make(model, backend)

    def info(self) -> tuple[object, bool]:
        return self.backend.tokenizer, self.backend.per_request_seeds

    def generate(self, requests: list[Request]) -> tuple[list[list[Completion]], BackendStats]:
        """Completions, and what they added to the backend's counts."""
        before = BackendStats(**vars(self.backend.stats))
        out = self.backend.generate(requests)
        return out, _minus(self.backend.stats, before)

    def stats(self) -> BackendStats:
        return self.backend.stats

    def close(self) -> None:
        self.backend.close()


def _minus(after: BackendStats, before: BackendStats) -> BackendStats:
    return BackendStats(**{f.name: getattr(after, f.name) - getattr(before, f.name) for f in fields(BackendStats)})


def add_stats(total: BackendStats, part: BackendStats) -> None:
    for f in fields(BackendStats):
        if f.name != "seconds":  # the caller's wall time: actors generate side by side
            setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))


def remote_class(cls, **options):
    """`cls` as a Ray actor class; `options` are Ray's (num_gpus, num_cpus, max_concurrency, ...)."""
    return import_ray().remote(cls).options(max_restarts=0, **options)


class RemoteBackend:
    """A backend served by a `BackendActor` (a search's critic): `generate` only; the continuous scheduler
    sees it through `Queued`."""

    per_request_seeds = True

    def __init__(self, actor):
        self.actor = actor
        self.stats = BackendStats()

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        start = time.perf_counter()
        out, part = import_ray().get(self.actor.generate.remote(requests))
        add_stats(self.stats, part)
        self.stats.seconds += time.perf_counter() - start
        return out

    def reset(self) -> None:
        self.stats = BackendStats()

    def close(self) -> None:
        pass


class RayBackend:
    """A backend whose `generate` spreads the requests over `BackendActor`s (eval on Ray): the batch is cut into
    pieces, two per actor, handed out as actors free up; answers come back in request order."""

    def __init__(self, cfg: RayConfig, make: BackendFactory, model: ModelConfig, backend: BackendConfig):
        self.connected = connect(cfg)
        count, options = placement(cfg, backend)
        cls = remote_class(BackendActor, **options)
        make = factory_for_actors(make)
        self.slots = ActorSlots(lambda _slot: cls.remote(make, model, backend), count, cfg.max_replacements)
        self.tokenizer, self.per_request_seeds = import_ray().get(self.slots.actors[0].info.remote())
        self.stats = BackendStats()

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        start = time.perf_counter()
        size = max(1, -(-len(requests) // (2 * len(self.slots.live()))))
        pieces = [range(i, min(i + size, len(requests))) for i in range(0, len(requests), size)]
        out: list = [None] * len(requests)

        def done(piece: range, result, _slot: int) -> None:
            completions, part = result
            for i, cs in zip(piece, completions, strict=True):
                out[i] = cs
            add_stats(self.stats, part)

        dispatch(self.slots, pieces, lambda actor, piece: actor.generate.remote([requests[i] for i in piece]), done,
                 per_actor=1)
        self.stats.seconds += time.perf_counter() - start
        return out

    def reset(self) -> None:
        self.stats = BackendStats()

    def close(self) -> None:
        self.slots.close()
        if self.connected:
            import_ray().shutdown()


def ray_backends(cfg: RayConfig, make: BackendFactory) -> BackendFactory:
    """A backend factory whose backends generate on engine actors of the cluster `cfg` names."""
    return lambda model, backend: RayBackend(cfg, make, model, backend)
