"""Verification as a service: a pool of killable math-verify workers (what an answer is: `answers.py`).

Why a pool of processes and not a call to `math_verify.verify`:

- math-verify's own timeout is `signal.alarm`, which raises "signal only works in main thread" off the main
  thread (Math-Verify #50, #55) — and eval verifies from a background thread so that checking one chunk
  overlaps generating the next (the search waits for its verdicts: they decide what it expands next).
- Even on the main thread the alarm cannot interrupt work done in C: a power tower such as
  `9^{9^{9^{9^{9}}}}` freezes verification (#59), a nested-log expression hangs and eats memory (#63), and
  `\\dfrac{5^{(5^{(5^{5^5})} - 4)} - 5}{16}` (#65) parses at once but hangs whatever compares, prints or
  unpickles it. Only killing a process stops them.

So each worker is a separate process with an address-space limit (`RLIMIT_AS`); inside it math-verify runs
with its timeouts off, and the parent enforces our timeout per item: a worker that overruns, or dies for any
reason, is killed and replaced and its item is "unverifiable" — never rewarded, like a gold answer that
does not parse. Workers send back verdict strings only, never sympy objects (see `_collect`). The memory
limit protects the machine more than the verdict: math-verify catches `Exception` internally, so an
allocation failure deep inside it can come out as "wrong"; in practice hostile inputs hit the timeout first.

Both sides are parsed wrapped in `\\boxed{}` (bare LaTeX such as `\\dfrac{9}{7}` does not parse otherwise,
#70) and compared as `verify(gold, prediction)`: verify is not symmetric (#25).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import resource
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from mcts_cot.config import VerifyConfig
from mcts_cot.errors import UserError
from mcts_cot.tree import Verdict


class AnswerVerifier(Protocol):
    """What the search and eval need of a verifier: one verdict per (gold, predicted answer) item, in order.
    `Verifier` is the real one; tests pass exact-match fakes."""

    def verify_batch(self, items: list[tuple[str, str | None]]) -> list[Verdict]: ...


# ------------------------------------------------------------------------------- worker side (child)

_READY = "ready"
logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": we time it ourselves


def _parse(answer: str) -> list:
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


@lru_cache(maxsize=4096)
def _parse_gold(answer: str) -> list:
    """Gold parsed once per worker; [] unless it yields a math object (a bare string is only a fallback)."""
    from sympy import Basic, MatrixBase

    parsed = _parse(answer)
    return parsed if any(isinstance(p, Basic | MatrixBase) for p in parsed) else []


def _judge(gold: str, prediction: str) -> Verdict:
    from math_verify import verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return "unverifiable"
    try:
        same = verify(gold_parsed, _parse(prediction), timeout_seconds=None)
    except Exception:  # math-verify swallows most errors; anything that escapes means "could not verify"
        return "unverifiable"
    return "correct" if same else "wrong"


def _worker_main(conn: Connection, memory_mb: int) -> None:
    """Serve chunks `(gold, [prediction, ...])` in order, one verdict per prediction, until EOF.

    One reply per item, not per chunk, so the parent can time each item on its own.
    """
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.set_int_max_str_digits(0)  # a 5,000-digit integer is a valid answer; the timeout guards the cost
    if _judge("1", "1") != "correct":  # also warms math-verify up, so no real item pays for that
        return  # too little memory to work at all: the parent reports it instead of "unverifiable" forever
    conn.send(_READY)
    while True:
        try:
            gold, predictions = conn.recv()
        except EOFError:
            return
        for prediction in predictions:
            conn.send(_judge(gold, prediction))


# ------------------------------------------------------------------------------ pool side (parent)

_CHUNK = 8  # items per message, all with one gold answer, which the worker then parses once
_DEPTH = 2  # send a worker its next chunk once fewer items than this are left in flight
_START_TIMEOUT_S = 120.0


@dataclass
class VerifyStats:
    """Running totals of a Verifier, for progress lines and manifests."""

    items: int = 0
    """Items passed to verify_batch/submit, including "no_answer" ones."""
    cache_hits: int = 0
    """Items answered from the cache or by an identical item earlier in the same batch."""
    timeouts: int = 0
    """Items whose worker ran past timeout_s and was killed."""
    restarts: int = 0
    """Workers replaced, after a timeout or a crash."""
    seconds: float = 0.0
    """Wall time spent verifying batches."""


class _Worker:
    """One worker process, the pipe to it, and the items sent to it but not yet answered (oldest first)."""

    def __init__(self, ctx: Any, memory_mb: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, memory_mb), daemon=True, name="verify")
        self.proc.start()
        child.close()
        self.born = time.monotonic()
        self.started = 0.0  # when the oldest in-flight item began
        self.ready = False
        self.inflight: deque[int] = deque()

    def stop(self) -> None:
        """Kill without waiting: a process that grabbed gigabytes takes a while to tear down, and
        multiprocessing reaps it on a later start."""
        self.proc.kill()
        self.conn.close()


class Verifier:
    """A pool of `workers` math-verify processes with a per-item timeout and memory limit, and a cache.

    Workers start at construction, not lazily: `forkserver` forks them from a server that preloaded
    math-verify, so start-up is cheap, and a verifier that exists is about to be used. `forkserver`, not
    `fork`, because the parent may hold vLLM/torch threads; not plain `spawn`, because every timeout costs a
    replacement worker and a spawned interpreter needs about a second to import sympy.

    One background thread drives the pool (`submit`), so verification can overlap the next generation wave
    and the pool's state is only ever touched by that thread. Items travel in small chunks that share a
    gold answer (fewer messages, and one worker parses that gold), the next chunk is sent before the last
    item of the previous one is done so a worker never waits on IPC, and every item is answered, and
    timed, on its own.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, memory_mb: int = 2048,
                 cache_size: int = 100_000) -> None:
        if workers < 1 or timeout_s <= 0 or memory_mb < 1:
            raise UserError(f"verify: workers ({workers}), timeout_s ({timeout_s}) and memory_mb "
                            f"({memory_mb}) must be positive")
        self.timeout_s, self.memory_mb, self.cache_size = timeout_s, memory_mb, cache_size
        self.stats = VerifyStats()
        self._cache: dict[tuple[str, str], Verdict] = {}
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["mcts_cot.verify", "math_verify", "sympy"])
        self._workers = [_Worker(self._ctx, memory_mb) for _ in range(workers)]
        self._driver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")

    @classmethod
    def from_config(cls, cfg: VerifyConfig) -> Verifier:
        return cls(workers=cfg.workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish queued batches, then stop the workers."""
        self._driver.shutdown(wait=True)
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            worker.proc.join()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring)."""
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    # ------------------------------------------------------------------------------------------ API

    def submit(self, items: list[tuple[str, str | None]]) -> Future[list[Verdict]]:
        """Verify `(gold, predicted answer)` items in the background; `.result()` gives their verdicts."""
        return self._driver.submit(self._verify, list(items))

    def verify_batch(self, items: list[tuple[str, str | None]]) -> list[Verdict]:
        """One verdict per item, in order: correct, wrong, unverifiable, or no_answer (prediction empty)."""
        return self.submit(items).result()

    # ------------------------------------------------------------------------------------ internals

    def _verify(self, items: list[tuple[str, str | None]]) -> list[Verdict]:
        """Answer empty predictions and known pairs at once; send each distinct remaining pair once."""
        start = time.perf_counter()
        verdicts: list[Verdict | None] = [None] * len(items)
        todo: dict[tuple[str, str], list[int]] = {}
        for i, (gold, pred) in enumerate(items):
            if pred is None or not pred.strip():
                verdicts[i] = "no_answer"
            elif (gold, pred) in self._cache:
                verdicts[i] = self._cache[gold, pred]
                self.stats.cache_hits += 1
            else:
                self.stats.cache_hits += (gold, pred) in todo
                todo.setdefault((gold, pred), []).append(i)
        for key, verdict in zip(todo, self._run(list(todo)), strict=True):
            self._remember(key, verdict)
            for i in todo[key]:
                verdicts[i] = verdict
        self.stats.items += len(items)
        self.stats.seconds += time.perf_counter() - start
        return verdicts  # type: ignore[return-value]

    def _remember(self, key: tuple[str, str], verdict: Verdict) -> None:
        """Cache a verdict — timeouts too, so a hostile answer repeated across a tree costs one timeout.

        Oldest entries go first: repeats in a search are close together in time.
        """
        if self.cache_size <= 0:
            return
        if len(self._cache) >= self.cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = verdict

    def _run(self, items: list[tuple[str, str]]) -> list[Verdict]:
        """Verdicts of `items` in order; "unverifiable" where the worker was killed or died on the item."""
        results: list[Verdict] = ["unverifiable"] * len(items)
        queue = deque(_chunks(items))
        while queue or any(w.inflight for w in self._workers):
            self._dispatch(queue, items)
            wait([w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers],
                 timeout=self._next_deadline())
            for i, worker in enumerate(self._workers):
                self._workers[i] = self._collect(worker, results, queue)
        return results

    def _dispatch(self, queue: deque[list[int]], items: list[tuple[str, str]]) -> None:
        """Give queued chunks to the least-loaded ready workers that are about to run out of work."""
        while queue:
            ready = [w for w in self._workers if w.ready and len(w.inflight) < _DEPTH]
            if not ready:
                return
            worker = min(ready, key=lambda w: len(w.inflight))
            chunk = queue.popleft()
            if not worker.inflight:
                worker.started = time.monotonic()
            worker.inflight.extend(chunk)
            try:
                worker.conn.send((items[chunk[0]][0], [items[i][1] for i in chunk]))
            except OSError:  # it died since the last look: _collect replaces it and requeues the chunk
                return

    def _next_deadline(self) -> float:
        now = time.monotonic()
        deadlines = [w.started + self.timeout_s if w.ready else w.born + _START_TIMEOUT_S
                     for w in self._workers if w.inflight or not w.ready]
        return max(0.0, min(deadlines, default=now + 1.0) - now)

    def _collect(self, worker: _Worker, results: list[Verdict], queue: deque[list[int]]) -> _Worker:
        """Take the worker's replies; replace it if it died or overran. Returns the worker to keep.

        Replies are verdict strings only: unpickling a sympy object can re-evaluate it, and a hostile one
        would then hang this thread, which no deadline can interrupt.
        """
        try:
            while worker.conn.poll():
                reply = worker.conn.recv()
                if reply == _READY:
                    worker.ready = True
                    continue
                results[worker.inflight.popleft()] = reply
                worker.started = time.monotonic()
        except (EOFError, OSError):
            pass
        if not worker.ready and not worker.proc.is_alive():
            if worker.proc.exitcode == 0:  # its warm-up verification failed
                raise UserError(f"verify workers cannot verify '1' = '1' within {self.memory_mb} MiB; "
                                f"raise verify.memory_mb")
            raise RuntimeError(f"a verify worker failed to start (exit code {worker.proc.exitcode}); "
                               "see its error above")
        if not worker.ready and time.monotonic() > worker.born + _START_TIMEOUT_S:
            raise RuntimeError(f"a verify worker did not start within {_START_TIMEOUT_S:.0f} s")
        overran = worker.inflight and time.monotonic() > worker.started + self.timeout_s
        if worker.proc.is_alive() and not overran:
            return worker
        return self._replace(worker, queue, timed_out=bool(overran) and worker.proc.is_alive())

    def _replace(self, worker: _Worker, queue: deque[list[int]], timed_out: bool) -> _Worker:
        """Kill `worker`; its current item stays "unverifiable", the items behind it go back to the queue."""
        worker.stop()
        if worker.inflight:
            worker.inflight.popleft()
        queue.extendleft([i] for i in reversed(worker.inflight))
        self.stats.restarts += 1
        self.stats.timeouts += timed_out
        return _Worker(self._ctx, self.memory_mb)


def _chunks(items: list[tuple[str, str]]) -> list[list[int]]:
    """Indices of `items` grouped by gold answer (first appearance first), at most `_CHUNK` per group."""
    groups: dict[str, list[int]] = {}
    for i, (gold, _) in enumerate(items):
        groups.setdefault(gold, []).append(i)
    return [group[k: k + _CHUNK] for group in groups.values() for k in range(0, len(group), _CHUNK)]


# ------------------------------------------------------------------------------------- gold answers

_gold_pool: Verifier | None = None
_gold_key: VerifyConfig | None = None
_gold_lock = threading.Lock()


def check_golds(answers: list[str], cfg: VerifyConfig | None = None) -> list[bool]:
    """Whether each gold answer parses (wrapped in `\\boxed{}`) and verifies against itself in time.

    Checked when problems load. Gold can be hostile too (#65 hangs where math-verify's signal timeout does
    not help), so the check runs in a pool with the run's verify config (its timeout and memory limit),
    started on first use, replaced when another config asks, and stopped at exit. Nothing is parsed in this
    process: no signals are involved, so this works off the main thread.
    """
    with _gold_lock:
        pool = _gold_verifier(cfg or VerifyConfig())
        return [v == "correct" for v in pool.verify_batch([(a, a) for a in answers])]


def _gold_verifier(cfg: VerifyConfig) -> Verifier:
    global _gold_pool, _gold_key
    if _gold_pool is not None and _gold_key != cfg:
        _gold_pool.close()
        _gold_pool = None
    if _gold_pool is None:
        _gold_pool, _gold_key = Verifier.from_config(cfg), replace(cfg)
    return _gold_pool


@atexit.register
def _close_gold_pool() -> None:
    if _gold_pool is not None:
        _gold_pool.close()
