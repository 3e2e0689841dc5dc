"""The transformers backend: batched `generate`, for machines without vLLM and as a reference.

Requests with the same sampling settings are batched (left padding, `backend.batch_size` prompts per call,
`num_return_sequences = n`). A row stops at the token that completes a stop string in its generated text; that row's ids are then trimmed to the shortest prefix whose text holds the stop,
so `token_ids` are exactly what the model produced up to and including the stop. Log-probabilities are the
model's raw (pre-temperature) ones, as vLLM reports them, recorded step by step: keeping every step's scores
(`output_scores`) would hold steps × rows × vocab floats, gigabytes for a batch of long samples.

A request that carries its own `seed` is generated on its own (its n samples still in one call) so its
samples do not depend on its batch-mates; unseeded requests share batches and one seed per call.
"""

from __future__ import annotations

import dataclasses
import time
from itertools import groupby

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from mcts_cot.backends.base import (
    BackendStats,
    Completion,
    Queued,
    Request,
    eos_token_ids,
    stable_seed,
    stop_end,
)
from mcts_cot.config import BackendConfig, ModelConfig
from mcts_cot.models import load_tokenizer, resolve_dtype, resolve_model


class _LogprobRecorder(LogitsProcessor):
    """A logits processor that keeps, per row, the log-probability of each token generate picks.

    It runs before the temperature / top-p warpers (generate puts custom processors first), so it sees
    raw log-probs. At step t it stores the step's log-softmax; at step t+1 the token picked at t is the
    last input id, so it gathers that token's log-prob and drops the rest.
    """

    def __init__(self):
        self.steps = []
        self._last = None

    def __call__(self, input_ids, scores):
        self._take(input_ids[:, -1])
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _take(self, tokens) -> None:
        if self._last is not None:
            self.steps.append(self._last.gather(1, tokens[:, None]).squeeze(1))
            self._last = None

    def finish(self, sequences):
        """(rows, generated steps) log-probs, after taking the last step's pick from `sequences`."""
        self._take(sequences[:, -1])
        return torch.stack(self.steps, dim=1) if self.steps else sequences.new_zeros((sequences.shape[0], 0)).float()


class _StopOnGeneratedText(StoppingCriteria):
    """Stops a row once its *generated* text holds a stop string.

    transformers' own `stop_strings` also matches across the prompt boundary (a prompt ending in "\n" plus
    a first generated "\n" stops at once on "\n\n"), which vLLM never does. An earlier stop would have
    ended the row at an earlier step, so decoding a short tail of each row per step is enough.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...], prompt_width: int):
        self.tokenizer, self.stops, self.width = tokenizer, stops, prompt_width
        self.window = max(len(s) for s in stops) + 4  # a token is at least one character, bar split bytes

    def __call__(self, input_ids, scores, **kwargs):
        tails = self.tokenizer.batch_decode(input_ids[:, self.width:][:, -self.window:].tolist(), skip_special_tokens=True)
        return torch.tensor([stop_end(t, self.stops) is not None for t in tails], device=input_ids.device)


class HFBackend(Queued):
    """Generation with transformers `generate` on one device (CUDA when available, else CPU)."""

    def __init__(self, model: ModelConfig, backend: BackendConfig):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        path = resolve_model(model.name)
        self.tokenizer = load_tokenizer(model.name)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, resolve_dtype(model.dtype, gpu=self.device == "cuda")),
            trust_remote_code=model.trust_remote_code,
        ).to(self.device).eval()
        self.eos_ids = eos_token_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = self.tokenizer.pad_token_id
        self.batch_size = backend.batch_size
        self.seed = backend.seed
        self.stats = BackendStats()
        self.per_request_seeds = True
        self._calls = 0

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        start = time.perf_counter()
        results: list[list[Completion] | None] = [None] * len(requests)
        for batch in self._batches(requests):
            seed = requests[batch[0]].seed
            if seed is None:
                seed = stable_seed(self.seed, self._calls)
            self._calls += 1
            for i, completions in zip(batch, self._generate_batch([requests[i] for i in batch], seed), strict=True):
                results[i] = completions
        for req in requests:
            self.stats.requests += 1
            self.stats.prompt_tokens += len(req.prompt_ids)
        self.stats.seconds += time.perf_counter() - start
        return results

    def _batches(self, requests: list[Request]) -> list[list[int]]:
        """Indices grouped by identical sampling settings, at most `batch_size` per group; seeded requests alone."""
        def settings(i: int):
            r = requests[i]
            return (r.n, r.max_tokens, r.temperature, r.top_p, r.stop, r.seed if r.seed is not None else -1, i if r.seed is not None else -1)

        batches = []
        for _, group in groupby(sorted(range(len(requests)), key=settings), key=settings):
            group = list(group)
            batches += [group[j: j + self.batch_size] for j in range(0, len(group), self.batch_size)]
        return batches

    def _generate_batch(self, reqs: list[Request], seed: int) -> list[list[Completion]]:
        first = reqs[0]
        width = max(len(r.prompt_ids) for r in reqs)
        input_ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for row, r in enumerate(reqs):
            input_ids[row, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids):] = 1
        # Greedy samples are all the same: generate one per prompt and repeat it (generate refuses n > 1).
        greedy = first.temperature == 0
        sampling = {} if greedy else {"temperature": first.temperature, "top_p": first.top_p, "top_k": 0}
        config = GenerationConfig(
            max_new_tokens=first.max_tokens, do_sample=not greedy, num_return_sequences=1 if greedy else first.n,
            eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id, **sampling,
        )
        recorder = _LogprobRecorder()
        stops = [_StopOnGeneratedText(self.tokenizer, first.stop, width)] if first.stop else []
        torch.manual_seed(seed)
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config,
                logits_processor=LogitsProcessorList([recorder]), stopping_criteria=StoppingCriteriaList(stops),
            )
        logprobs = recorder.finish(sequences).cpu()
        new = sequences[:, width:].cpu()
        rows = [self._completion(new[k].tolist(), logprobs[k], first.stop) for k in range(new.shape[0])]
        if greedy:
            return [[dataclasses.replace(row) for _ in range(first.n)] for row in rows]
        return [rows[i * first.n: (i + 1) * first.n] for i in range(len(reqs))]

    def _completion(self, ids: list[int], logprobs, stop: tuple[str, ...]) -> Completion:
        finish = "length"
        cut = next((k for k, tok in enumerate(ids) if tok in self.eos_ids), None)
        if cut is not None:
            ids, finish = ids[:cut], "eos"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        end = stop_end(text, stop)
        if end is not None:
            ids = ids[: self._shortest_prefix(ids, text[:end])]
            text, finish = text[:end], "stop"
        self.stats.generated_tokens += len(ids)
        return Completion(token_ids=ids, text=text, logprob=float(logprobs[: len(ids)].sum()), finish=finish)

    def _shortest_prefix(self, ids: list[int], target: str) -> int:
        """Fewest leading tokens whose text starts with `target` (binary search: longer prefixes keep it)."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.tokenizer.decode(ids[:mid], skip_special_tokens=True).startswith(target):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def reset(self) -> None:
        self.stats = BackendStats()
        self._calls = 0

    def close(self) -> None:
        self.model = None
