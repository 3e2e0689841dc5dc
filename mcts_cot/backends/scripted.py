"""A deterministic fake backend for tests and `--dry-run`.

A *script* maps (prompt text, sample index) to the text to return (with `seeded`, the index also folds in the
request's seed, as a seeded model gives other samples for another seed); the backend tokenizes it with the real
tokenizer, cuts it at the first stop string (kept, as vLLM does with `include_stop_str_in_output`) and at
`max_tokens`. The default script writes arithmetic-looking steps and, at random but reproducibly, a boxed
answer, so a dry run exercises every part of the engine in seconds.

Request by request (`submit` / `poll` / `cancel`), a poll finishes the requests that `order` picks from those
queued, in the order it gives (default: all of them, first submitted first): a test passes a seeded shuffle
that finishes a few at a time to show that the continuous scheduler's trees do not depend on timing.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

from mcts_cot.backends.base import BackendStats, Completion, Request, stable_seed, stop_end

Script = Callable[[str, int], str]
Order = Callable[[list[int]], list[int]]  # queued request ids -> those that finish at this poll, in order


def default_script(prompt: str, index: int) -> str:
    """Steps of made-up arithmetic; about one call in three ends with an answer between 0 and 9."""
    rng = random.Random(hashlib.sha256(f"{prompt}\x00{index}".encode()).digest())
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    step = f"Step: {a} + {b} = {a + b}.\n\n"
    if rng.random() < 0.35:
        return f"So the total is {a + b}. The answer is \\boxed{{{rng.randint(0, 9)}}}."
    return step


class ScriptedBackend:
    """Returns scripted text as if a model had generated it."""

    per_request_seeds = True  # deterministic: the same script gives the same text

    def __init__(self, tokenizer, script: Script = default_script, order: Order | None = None, seeded: bool = False):
        self.tokenizer = tokenizer
        self.script = script
        self.order = order
        self.seeded = seeded
        self.stats = BackendStats()
        self.queued: dict[int, Request] = {}
        self.submitted = 0
        self.cancelled: list[int] = []

    def submit(self, request: Request) -> int:
        self.submitted += 1
        self.queued[self.submitted] = request
        return self.submitted

    def poll(self) -> list[tuple[int, list[Completion]]]:
        ids = self.order(list(self.queued)) if self.order else list(self.queued)
        return [(rid, self.generate([self.queued.pop(rid)])[0]) for rid in ids]

    def cancel(self, ids: list[int]) -> None:
        for rid in ids:
            if self.queued.pop(rid, None) is not None:
                self.cancelled.append(rid)

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        start = time.perf_counter()
        out = []
        for req in requests:
            prompt = self.tokenizer.decode(req.prompt_ids)
            first = stable_seed(req.seed, "scripted") % 10**6 * req.n if self.seeded and req.seed is not None else 0
            out.append([self._complete(req, self.script(prompt, first + i)) for i in range(req.n)])
            self.stats.requests += 1
            self.stats.prompt_tokens += len(req.prompt_ids)  # once per request, as vLLM counts it
        self.stats.seconds += time.perf_counter() - start
        return out

    def _complete(self, req: Request, text: str) -> Completion:
        finish = "eos"
        end = stop_end(text, req.stop)
        if end is not None:
            text, finish = text[:end], "stop"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > req.max_tokens:
            ids, finish = ids[: req.max_tokens], "length"
            text = self.tokenizer.decode(ids)
        self.stats.generated_tokens += len(ids)
        return Completion(token_ids=ids, text=text, logprob=-0.1 * len(ids), finish=finish)

    def reset(self) -> None:
        self.stats = BackendStats()

    def close(self) -> None:
        pass
