"""The vLLM backend: one offline `vllm.LLM` engine, token-id prompts, prefix caching.

Every request goes as `prompt_token_ids` with its own `SamplingParams` (its own n, stops and seed), all in
ONE `generate` call, so vLLM batches a whole search wave; or request by request on the same engine's own
add-request / step / abort loop (`submit` / `poll` / `cancel`, what `LLM.generate` itself runs), so the
continuous scheduler adds a request to the running batch as soon as a tree asks for it. A request's seed is its own `Request.seed` or one
derived from the backend seed, the call number and its index, so a run with the same config reproduces.
On CPU, per-request seeds are NOT sent: when vLLM splits a prompt over two steps (chunked prefill, always on
in V1, vllm#18547) it rewinds a seeded request's generator with `set_offset`, which only CUDA generators
support (vllm PR #10097), and the engine dies with "CPU Generator does not use offset". CPU runs are then
reproducible through the engine seed only, given the same batches; GPU runs get per-request seeds.
On CPU the engine uses 32-token KV blocks (see CPU_BLOCK_SIZE), bf16 where the CPU has it natively, and a KV
cache sized in GiB (cpu_kv_cache.py), never as a fraction of memory.
Completions are normalised to the `Completion` contract: stop strings kept in the text, EOS tokens dropped
from the ids (the trainer appends end-of-turn itself), and a log-probability summed over the kept ids only.
"""

from __future__ import annotations

import os
import time

from mcts_cot.backends.base import BackendStats, Completion, Request, eos_token_ids, stable_seed
from mcts_cot.config import BackendConfig, ModelConfig
from mcts_cot.models import load_tokenizer, resolve_dtype, resolve_model

# vLLM-CPU's attention needs a multiple of 32; its default of 128 reuses only whole 128-token blocks from the
# prefix cache. With 32, a search wave of 40 two-shot prompts x 4 samples ran 2.8x faster on 2 cores
# (bench/bench_vllm_cpu.py; 4.7x together with bf16).
CPU_BLOCK_SIZE = 32


class VLLMBackend:
    """Generation with an offline vLLM engine (CPU or GPU build)."""

    def __init__(self, model: ModelConfig, backend: BackendConfig):
        # vLLM logs every engine step at INFO and a line per weight at WARNING (its workers too), which buries
        # the progress and the results: ERROR unless set (the CLI's --vllm-logs sets INFO); read at first import.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        quiet = os.environ["VLLM_LOGGING_LEVEL"].upper() in ("ERROR", "CRITICAL")
        from transformers import GenerationConfig
        from vllm import LLM
        from vllm.platforms import current_platform

        path = resolve_model(model.name)
        self.tokenizer = load_tokenizer(model.name)
        self.seed = backend.seed
        cpu = current_platform.is_cpu()
        self.per_request_seeds = not cpu
        self.stats = BackendStats()
        self._calls = 0
        self._running: dict[str, tuple[int, Request]] = {}  # vLLM request id -> (our id, request)
        self._submitted = 0
        dtype = resolve_dtype(model.dtype, gpu=not cpu)
        memory = _cpu_memory_kwargs(path, dtype, backend) if cpu else {"gpu_memory_utilization": backend.gpu_memory_utilization}
        self.llm = LLM(
            model=path, tokenizer=path, trust_remote_code=model.trust_remote_code, dtype=dtype, seed=backend.seed,
            tensor_parallel_size=backend.tensor_parallel_size,
            max_model_len=backend.max_model_len, enable_prefix_caching=backend.enable_prefix_caching,
            block_size=backend.block_size or (CPU_BLOCK_SIZE if cpu else None), **memory,
            **{"use_tqdm_on_load": not quiet, **backend.engine_kwargs},
        )
        try:
            gen_cfg = GenerationConfig.from_pretrained(path)
        except OSError:  # a folder without generation_config.json: the tokenizer's EOS is all there is
            gen_cfg = None
        self.eos_ids = eos_token_ids(self.tokenizer, gen_cfg)

    def _params(self, req: Request, index: int):
        from vllm import SamplingParams

        return SamplingParams(
            n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_tokens,
            stop=list(req.stop), include_stop_str_in_output=True, logprobs=0,
            seed=self._seed(req, index),
        )

    def _seed(self, req: Request, index: int) -> int | None:
        if not self.per_request_seeds:
            return None
        return req.seed if req.seed is not None else stable_seed(self.seed, self._calls, index)

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        start = time.perf_counter()
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [self._params(r, i) for i, r in enumerate(requests)]
        self._calls += 1
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for req, out in zip(requests, outputs, strict=True):
            self.stats.requests += 1
            self.stats.prompt_tokens += len(req.prompt_ids)
            self.stats.cached_prompt_tokens += out.num_cached_tokens or 0
            results.append([self._completion(c) for c in sorted(out.outputs, key=lambda c: c.index)])
        self.stats.seconds += time.perf_counter() - start
        return results

    def submit(self, request: Request) -> int:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._submitted += 1
        params = self._params(request, self._submitted)
        params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when all n samples are done
        key = f"mcts-{self._submitted}"
        self.llm.llm_engine.add_request(key, TokensPrompt(prompt_token_ids=list(request.prompt_ids)), params)
        self._running[key] = (self._submitted, request)
        return self._submitted

    def poll(self) -> list[tuple[int, list[Completion]]]:
        """One engine step (a batch of decode and prefill tokens); the requests it finished."""
        if not self._running:
            return []
        start = time.perf_counter()
        results = []
        for out in self.llm.llm_engine.step():
            if not out.finished or out.request_id not in self._running:
                continue
            rid, req = self._running.pop(out.request_id)
            self.stats.requests += 1
            self.stats.prompt_tokens += len(req.prompt_ids)
            self.stats.cached_prompt_tokens += out.num_cached_tokens or 0
            results.append((rid, [self._completion(c) for c in sorted(out.outputs, key=lambda c: c.index)]))
        self.stats.seconds += time.perf_counter() - start
        return results

    def cancel(self, ids: list[int]) -> None:
        wanted = set(ids)
        keys = [key for key, (rid, _) in self._running.items() if rid in wanted]
        for key in keys:
            del self._running[key]
        if keys:
            self.llm.llm_engine.abort_request(keys)

    def _completion(self, out) -> Completion:
        ids = list(out.token_ids)
        if out.finish_reason == "length":
            finish = "length"
        elif isinstance(out.stop_reason, str):
            finish = "stop"
        else:  # EOS, or a stop token id from the generation config
            finish = "eos"
        while ids and ids[-1] in self.eos_ids and finish != "stop":
            ids.pop()
        logprob = sum(out.logprobs[i][tok].logprob for i, tok in enumerate(ids)) if out.logprobs else 0.0
        self.stats.generated_tokens += len(ids)
        return Completion(token_ids=ids, text=out.text, logprob=float(logprob), finish=finish)

    def reset(self) -> None:
        self.stats = BackendStats()
        self._calls = 0

    def close(self) -> None:
        """Shut the engine process down now rather than at interpreter exit."""
        llm, self.llm = self.llm, None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()


def _cpu_memory_kwargs(path: str, dtype: str, backend: BackendConfig) -> dict:
    """vLLM-CPU gets an absolute KV cache size (see cpu_kv_cache.py), checked and logged before the engine starts."""
    from rich.console import Console

    from mcts_cot.backends.cpu_kv_cache import (
        GIB,
        cpu_kv_cache_bytes,
        kv_bytes_per_token,
        node_available_bytes,
        requested_gib,
    )

    per_token = kv_bytes_per_token(path, dtype)
    size = cpu_kv_cache_bytes(requested_gib(backend.cpu_kv_cache_gib), node_available_bytes(), per_token,
                              backend.max_model_len)
    Console(stderr=True).print(f"vLLM-CPU: KV cache {size / GIB:.2f} GiB ({size // per_token} tokens, {dtype})",
                               highlight=False)
    return {"kv_cache_memory_bytes": size}
