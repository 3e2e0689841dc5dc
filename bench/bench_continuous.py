"""Continuous scheduling against lock-step waves on vLLM with the embedded model, and both against best-of-N.

One vLLM engine, the demo's search settings (configs/recipes/demo.yaml: the allocator, adaptive width, its
per-tree budget) on the demo's first group of train problems, three arms in one run, prefix cache reset
before each:

  waves       `schedule: waves` (the engine before issue 15): one `generate` call per wave;
  continuous  `schedule: continuous`, k = 1: request by request on the engine's add-request / step loop;
  best-of-N   whole responses sampled straight from vLLM's request loop with the same number of sequences in
              flight (concurrent trees x children), the same per-sample token cap (policy.max_path_tokens)
              and sampling, until it has generated as many tokens as the continuous search: what the engine
              does with no tree around it.

Prints (a) generated tokens/s of each search arm against best-of-N (aim >= 0.85; waves is the baseline) and
the search wall time of waves against continuous (the demo's search, before and after). Heavy: run it under
the shared lock.

    flock /tmp/mcts-heavy.lock .venv/bin/python bench/bench_continuous.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_config(args, schedule: str):
    import yaml

    from mcts_cot.config import load_config
    from mcts_cot.search import SearchConfig

    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "demo.yaml").read_text())
    sets = [f"{k}={v}" for k, v in recipe["search"]["set"].items()]
    return load_config(SearchConfig, None, [
        *sets, f"model.name={recipe['model']}", "backend.name=vllm", f"schedule={schedule}",
        f"problems.source=builtin:arithmetic:{args.problems}", f"allocator.group={args.problems}",
        f"concurrent_trees={args.problems}", f"seed={args.seed}"])


def search(cfg, backend, verifier, problems) -> dict:
    from mcts_cot.search import Engine, run_waves

    backend.llm.reset_prefix_cache()
    before = backend.stats.generated_tokens
    engine = Engine(cfg, {"main": backend}, verifier, backend.tokenizer)
    trees = []
    start = time.perf_counter()
    result = run_waves(engine, problems, trees.extend)
    wall = time.perf_counter() - start
    tokens = backend.stats.generated_tokens - before
    return {"schedule": cfg.schedule, "wall_s": wall, "steps": result["waves"], "generated_tokens": tokens,
            "tokens_per_s": tokens / wall, "solved": sum(t.stats["correct"] > 0 for t in trees),
            "expansions": sum(t.stats.get("expansions", 0) for t in trees)}


def best_of_n(cfg, backend, prompts: list[list[int]], tokens_wanted: int) -> dict:
    """`concurrent_trees` requests of `children` samples each in flight, refilled as they finish."""
    from mcts_cot.backends.base import Request

    backend.llm.reset_prefix_cache()
    before = backend.stats.generated_tokens
    sent, steps, in_flight = 0, 0, 0
    start = time.perf_counter()

    def submit() -> None:
        nonlocal sent, in_flight
        backend.submit(Request(prompt_ids=prompts[sent % len(prompts)], n=cfg.policy.children,
                               max_tokens=cfg.policy.max_path_tokens, temperature=cfg.temperature,
                               top_p=cfg.top_p))
        sent, in_flight = sent + 1, in_flight + 1

    for _ in range(cfg.concurrent_trees):
        submit()
    while in_flight:
        steps += 1
        for _ in backend.poll():
            in_flight -= 1
            if backend.stats.generated_tokens - before < tokens_wanted:
                submit()
    wall = time.perf_counter() - start
    tokens = backend.stats.generated_tokens - before
    return {"wall_s": wall, "steps": steps, "requests": sent, "generated_tokens": tokens, "tokens_per_s": tokens / wall}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=24, help="problems (the demo's allocator group is 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from mcts_cot.backends.vllm_backend import VLLMBackend
    from mcts_cot.problems import load_problems
    from mcts_cot.prompts import prompt_ids
    from mcts_cot.verify import Verifier

    waves_cfg, cont_cfg = demo_config(args, "waves"), demo_config(args, "continuous")
    problems = load_problems(cont_cfg.problems)[0]
    start = time.perf_counter()
    backend = VLLMBackend(cont_cfg.model, cont_cfg.backend)
    engine_start = time.perf_counter() - start
    prompts = [prompt_ids(backend.tokenizer, cont_cfg.prompt, p.problem) for p in problems]
    try:
        with Verifier.from_config(cont_cfg.verify) as verifier:
            search(cont_cfg, backend, verifier, problems[:2])  # warm-up (compiled shapes), and a first check
            waves = search(waves_cfg, backend, verifier, problems)
            print(f"waves:      {waves}", flush=True)
            cont = search(cont_cfg, backend, verifier, problems)
            print(f"continuous: {cont}", flush=True)
        bon = best_of_n(cont_cfg, backend, prompts, cont["generated_tokens"])
        print(f"best-of-N:  {bon}", flush=True)
    finally:
        backend.close()
    figures = {
        "engine_start_s": engine_start, "problems": len(problems),
        "sequences_in_flight": cont_cfg.concurrent_trees * cont_cfg.policy.children,
        "per_sample_token_cap": cont_cfg.policy.max_path_tokens,
        "waves": waves, "continuous": cont, "best_of_n": bon,
        "a_waves_over_bon": waves["tokens_per_s"] / bon["tokens_per_s"],
        "a_continuous_over_bon": cont["tokens_per_s"] / bon["tokens_per_s"],
        "demo_search_wall_waves_over_continuous": waves["wall_s"] / cont["wall_s"],
    }
    path = write_result("bench_continuous", figures, args.out)
    print(f"results: {path}")
    print(f"ratio (a): search tokens/s / best-of-N tokens/s = {figures['a_waves_over_bon']:.2f} waves (baseline), "
          f"{figures['a_continuous_over_bon']:.2f} continuous (aim >= 0.85); demo search wall waves / continuous = "
          f"{figures['demo_search_wall_waves_over_continuous']:.2f}x ({waves['wall_s']:.0f} s -> {cont['wall_s']:.0f} s)")
    return figures


if __name__ == "__main__":
    main()
