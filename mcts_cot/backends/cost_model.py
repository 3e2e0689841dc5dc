"""A simulated GPU engine for benchmarks: continuous batching in simulated time, real steps from a real run.

vLLM schedules at the granularity of one decode step: every step each running sequence gains one token, new
requests are admitted while fewer than `max_num_seqs` sequences run, and a sequence that ends frees its slot at
once. This backend does the same in simulated time, so how full the batch stays under a scheduler (lock-step
waves against continuous) can be measured on a CPU without a GPU. What a sequence writes is drawn from `pools`:
real completions of a real run, keyed by problem (the request's prompt tells which), chosen by the request's
seed and sample index, so a tree grows the same whatever the timing.

The step latency follows a stated model of a GPU decode step (`GpuStep`): a fixed cost, a cost per running
sequence and a cost per prefill token (prompt tokens that miss the prefix cache, in `block`-token blocks as
vLLM caches them). Default constants, for Llama-3.1-8B in bf16 on one A100 with vLLM:

- 13.3 ms at one running sequence: ~75 generated tokens/s at concurrency 1 (J. Musgrave, "vLLM throughput-latency
  sweep on NVIDIA A100", johnmusgrave.com, 2025: Llama-3.1-8B-Instruct, bf16, vLLM 0.23, 1024-token prompts);
- +0.41 ms per further running sequence: the same sweep gives 6.6x the throughput at 8 sequences "with almost no
  latency cost", i.e. 8 / (6.6 x 75) s = 16.2 ms a step at 8;
- +0.10 ms per prefill token: 2 x 8e9 FLOP per token at half of the A100's 312 bf16 TFLOP/s (a roofline estimate,
  not a measurement; prefill is compute-bound).

Only the simulated seconds depend on these; occupancy (running sequences per step / `max_num_seqs`) does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mcts_cot.backends.base import BackendStats, Completion, Request


@dataclass(frozen=True)
class GpuStep:
    """Latency of one engine step in ms: `base + per_seq * running + per_prefill_token * prefill_tokens`."""

    base_ms: float = 13.3
    per_seq_ms: float = 0.41
    per_prefill_token_ms: float = 0.10

    def ms(self, running: int, prefill_tokens: int) -> float:
        return self.base_ms + self.per_seq_ms * running + self.per_prefill_token_ms * prefill_tokens


@dataclass
class _Running:
    request: Request
    completions: list[Completion]
    left: list[int]  # tokens each sequence still has to generate (0: done, its slot free)


@dataclass
class Occupancy:
    """Per-step figures of a simulated run."""

    steps: int = 0
    running: int = 0  # sum over steps of the sequences that ran
    prefill_tokens: int = 0
    seconds: float = 0.0
    per_step: list[int] = field(default_factory=list)

    def share(self, max_num_seqs: int) -> float:
        return self.running / (self.steps * max_num_seqs) if self.steps else 0.0


class CostModelBackend:
    """`submit` / `poll` / `cancel` (one poll = one simulated engine step) and `generate` (a lock-step wave: all
    requests submitted, then steps until the last one ends), over completions drawn from `pools`."""

    per_request_seeds = True

    def __init__(self, tokenizer, prompts: list[list[int]], pools: list[list[Completion]], max_num_seqs: int = 256,
                 step: GpuStep = GpuStep(), block: int = 16, key_tokens: int = 24):
        self.tokenizer, self.key_tokens = tokenizer, key_tokens
        self.pools = {self._key(p, len(p)): pool for p, pool in zip(prompts, pools, strict=True)}
        self.lengths = sorted({len(p) for p in prompts})
        self.max_num_seqs, self.step_model, self.block = max_num_seqs, step, block
        self.stats, self.occupancy = BackendStats(), Occupancy()
        self.waiting: dict[int, Request] = {}
        self.running: dict[int, _Running] = {}
        self.cached: set[bytes] = set()
        self.submitted = 0

    # ------------------------------------------------------------------------------------------ request level

    def submit(self, request: Request) -> int:
        self.submitted += 1
        self.waiting[self.submitted] = request
        return self.submitted

    def cancel(self, ids: list[int]) -> None:
        for rid in ids:
            self.waiting.pop(rid, None)
            self.running.pop(rid, None)

    def poll(self) -> list[tuple[int, list[Completion]]]:
        """One engine step: admit waiting requests FIFO while their sequences fit, every running sequence gains
        a token, the requests whose sequences all ended come back."""
        if not self.waiting and not self.running:
            return []
        prefill = self._admit()
        seqs = sum(1 for r in self.running.values() for n in r.left if n > 0)
        occ = self.occupancy
        occ.steps += 1
        occ.running += seqs
        occ.prefill_tokens += prefill
        occ.per_step.append(seqs)
        occ.seconds += self.step_model.ms(seqs, prefill) / 1e3
        done = []
        for rid, run in list(self.running.items()):
            run.left = [max(0, n - 1) for n in run.left]
            if not any(run.left):
                done.append((rid, run.completions))
                del self.running[rid]
        return done

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        ids = [self.submit(r) for r in requests]
        got: dict[int, list[Completion]] = {}
        while len(got) < len(ids):
            got.update(self.poll())
        return [got[i] for i in ids]

    # ------------------------------------------------------------------------------------------ internals

    def _admit(self) -> int:
        free = self.max_num_seqs - sum(1 for r in self.running.values() for n in r.left if n > 0)
        prefill = 0
        for rid, req in list(self.waiting.items()):
            if req.n > free:
                break
            del self.waiting[rid]
            comps = [self._draw(req, i) for i in range(req.n)]
            self.running[rid] = _Running(req, comps, [max(1, len(c.token_ids)) for c in comps])
            free -= req.n
            prefill += self._uncached(req.prompt_ids)
            self.stats.requests += 1
            self.stats.prompt_tokens += len(req.prompt_ids)
            self.stats.generated_tokens += sum(len(c.token_ids) for c in comps)
        return prefill

    def _uncached(self, ids: list[int]) -> int:
        """Prompt tokens past the longest cached prefix of whole blocks; the prompt's blocks are cached after."""
        h, missed = hashlib.sha256(), 0
        for start in range(0, len(ids) - len(ids) % self.block, self.block):
            h.update(repr(ids[start:start + self.block]).encode())
            key = h.digest()
            if key not in self.cached:
                self.cached.add(key)
                missed += self.block
        return missed + len(ids) % self.block

    def _draw(self, req: Request, index: int) -> Completion:
        pool = self._pool(req.prompt_ids)
        pick = int.from_bytes(hashlib.sha256(f"{req.seed}\x00{index}".encode()).digest()[:8], "little")
        comp = pool[pick % len(pool)]
        if len(comp.token_ids) <= req.max_tokens:
            return comp
        ids = comp.token_ids[:req.max_tokens]
        return Completion(token_ids=ids, text=self.tokenizer.decode(ids), logprob=comp.logprob, finish="length")

    def _pool(self, prompt: list[int]) -> list[Completion]:
        """The pool of the problem whose prompt `prompt` starts with (keyed by its length and last tokens)."""
        for length in self.lengths:
            pool = self.pools.get(self._key(prompt, length)) if len(prompt) >= length else None
            if pool is not None:
                return pool
        raise KeyError("a request whose prompt starts with no known problem's prompt")

    def _key(self, prompt: list[int], length: int) -> tuple:
        return length, tuple(prompt[max(0, length - self.key_tokens):length])

    def reset(self) -> None:
        self.stats, self.occupancy = BackendStats(), Occupancy()

    def close(self) -> None:
        pass
