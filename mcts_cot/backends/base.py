"""The one small interface every generation engine implements.

Requests carry token ids, never text, so the search, the export and the trainer all see the same tokens
(no re-tokenisation drift at step boundaries). A response keeps the stop string in its text and tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class Request:
    """Generate `n` continuations of `prompt_ids`."""

    prompt_ids: list[int]
    n: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None  # per-request sampling seed: a tree's samples must not depend on its batch-mates


@dataclass
class Completion:
    """One continuation. `finish`: `stop` (a stop string, kept at the end of `text`), `eos` (the model
    ended its turn; the EOS token is not in `token_ids`) or `length` (hit `max_tokens`)."""

    token_ids: list[int]
    text: str
    logprob: float
    finish: FinishReason


@dataclass
class BackendStats:
    """Running totals a backend reports for progress bars and manifests."""

    requests: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    seconds: float = 0.0

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else None

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (a run seed, a problem id, a node id, a call number), equal across runs
    and machines: what makes a tree's samples independent of its batch-mates and of resumption."""
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:4], "little") & 0x7FFFFFFF


def stop_end(text: str, stops: tuple[str, ...] | list[str]) -> int | None:
    """End index of the earliest stop string in `text` (the stop kept), or None when none occurs."""
    ends = [(i, i + len(s)) for s in stops if s and (i := text.find(s)) >= 0]
    return min(ends)[1] if ends else None


def eos_token_ids(tokenizer, generation_config=None) -> set[int]:
    """Every token id that ends a turn: the tokenizer's EOS plus the generation config's (int or list)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(generation_config, "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, list | tuple) else ({extra} if extra is not None else set())
    return ids


class Backend(Protocol):
    """A generation engine. `generate` returns, per request, exactly `request.n` completions; `submit` /
    `poll` / `cancel` are the same work one request at a time, for the continuous scheduler."""

    tokenizer: object
    stats: BackendStats
    per_request_seeds: bool  # each request is sampled with its own seed (not vLLM on CPU; see vllm_backend)

    def generate(self, requests: list[Request]) -> list[list[Completion]]: ...

    def submit(self, request: Request) -> int:
        """Queue one request; returns its id."""
        ...

    def poll(self) -> list[tuple[int, list[Completion]]]:
        """Advance the engine (one step where it has steps) and return the requests that finished, as
        (id, its `n` completions); empty when nothing finished yet."""
        ...

    def cancel(self, ids: list[int]) -> None:
        """Drop queued or running requests: their slots go to the others at once."""
        ...

    def reset(self) -> None:
        """Count afresh (stats, and the call number that unseeded requests derive their seed from), as a
        newly started engine would: an engine shared by several stages gives each the same samples and
        figures as its own engine."""
        ...

    def close(self) -> None: ...


class Queued:
    """`submit` / `poll` / `cancel` for a backend that only has `generate`: a poll answers everything submitted
    since the last poll in one `generate` call, so the continuous scheduler degrades to waves on it."""

    _queued: dict[int, Request] | None = None
    _last_id = 0

    def submit(self, request: Request) -> int:
        if self._queued is None:
            self._queued = {}
        self._last_id += 1
        self._queued[self._last_id] = request
        return self._last_id

    def poll(self) -> list[tuple[int, list[Completion]]]:
        queue, self._queued = self._queued or {}, None
        return list(zip(queue, self.generate(list(queue.values())), strict=True))

    def cancel(self, ids: list[int]) -> None:
        for rid in ids:
            (self._queued or {}).pop(rid, None)


class QueuedGenerate(Queued):
    """Any object with `generate` (a test double, a recording wrapper) seen through `Queued`."""

    def __init__(self, backend):
        self.generate = backend.generate


def request_level(backend) -> Backend:
    """`backend` if it has `submit` / `poll` / `cancel`, else its `generate` behind `Queued`."""
    return backend if hasattr(backend, "submit") else QueuedGenerate(backend)
