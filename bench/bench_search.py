"""The search on the embedded model with vLLM: one engine start, four comparisons, ratios printed last.

(a) generated tokens/s inside the search (Engine + run_waves, wall time including selection, backup and
    verification) against raw vLLM `generate` replaying the search's own first `--replay-waves` waves:
    the same token-id prompts, n, max_tokens, stop strings, seeds and logprobs setting, one call per wave,
    the prefix cache reset before each side. Aim >= 0.85.
(b) wall time of the same search with concurrent_trees 64 against 1, on a small problem set and budget
    (on GPU a tree grows the same whatever its batch-mates; on CPU the backend sends no per-request
    seeds, so the two runs sample different trees of the same budget). Aim >= 5x.
(c) the prefix-cache hit rate during the search of (a)/(d) (cached prompt tokens / prompt tokens).
(d) solve rate of MCTS against best-of-N sampling with the same total generated tokens, on the same
    built-in problems (pass@N with the same oracle verifier that scores MCTS leaves). Aim MCTS >= 1.3x.

The base config is configs/search/plain.yaml; the per-tree budget and the problem count are reduced (flags
below) so the run finishes in about 15 minutes on a 2-core CPU. Run under the shared lock:

    flock /tmp/mcts-heavy.lock python bench/bench_search.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class RecordingBackend:
    """Wraps a backend: records each wave's requests, timing and generated tokens."""

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.waves: list[dict] = []
        self.record = True

    @property
    def stats(self):
        return self.inner.stats

    def generate(self, requests):
        start = time.perf_counter()
        out = self.inner.generate(requests)
        if self.record:
            self.waves.append({"requests": requests, "seconds": time.perf_counter() - start,
                               "tokens": sum(len(c.token_ids) for comps in out for c in comps)})
        return out

    def close(self):
        pass


def search_config(args, concurrent: int):
    from mcts_cot.config import load_config
    from mcts_cot.search import SearchConfig

    base = Path(__file__).resolve().parents[1] / "configs" / "search" / "plain.yaml"
    return load_config(SearchConfig, base, [
        f"concurrent_trees={concurrent}", f"budget.max_rollouts={args.max_rollouts}",
        f"budget.min_rollouts={args.min_rollouts}", f"budget.success_correct={args.success_correct}",
        f"budget.success_correct_after_min={args.success_correct_after_min}",
        f"backend.gpu_memory_utilization={args.gpu_memory_utilization}", f"seed={args.seed}",
        f"problems.source=builtin:arithmetic:{args.problems}",
    ])


def reset_cache(backend) -> None:
    llm = backend.inner.llm if hasattr(backend, "inner") else backend.llm
    if not llm.reset_prefix_cache():
        print("warning: vLLM did not reset its prefix cache", file=sys.stderr)


def snapshot(stats) -> tuple[int, int, int]:
    return stats.generated_tokens, stats.prompt_tokens, stats.cached_prompt_tokens


def run_search(cfg, backend, verifier, problems) -> dict:
    """Engine + run_waves on `problems`; per-wave end times, tokens, prefix-cache figures, solve rate."""
    from mcts_cot.search import Engine, run_waves

    reset_cache(backend)
    backend.waves = []
    before = snapshot(backend.stats)
    engine = Engine(cfg, {"main": backend}, verifier, backend.tokenizer)
    trees, marks = [], []
    start = time.perf_counter()

    def on_wave(waves, tokens, live):
        marks.append((time.perf_counter() - start, tokens))

    result = run_waves(engine, problems, trees.extend, on_wave)
    wall = time.perf_counter() - start
    gen, prompt, cached = (a - b for a, b in zip(snapshot(backend.stats), before, strict=True))
    status: dict[str, int] = {}
    for t in trees:
        status[t.status] = status.get(t.status, 0) + 1
    return {
        "concurrent_trees": cfg.concurrent_trees, "problems": len(problems), "wall_s": wall,
        "waves": result["waves"], "generated_tokens": gen, "tokens_per_s": gen / wall,
        "generate_s": sum(w["seconds"] for w in backend.waves),
        "prompt_tokens": prompt, "cached_prompt_tokens": cached, "prefix_cache_hit_rate": cached / max(1, prompt),
        "solved": sum(t.stats.get("correct", 0) > 0 for t in trees), "status": status,
        "rollouts": sum(t.stats.get("rollouts", 0) for t in trees),
        "expansions": sum(t.stats.get("expansions", 0) for t in trees),
        "tokens_per_problem": {t.problem["id"]: t.stats.get("generated_tokens", 0) for t in trees},
        "marks": marks, "recorded": list(backend.waves),
    }


def raw_replay(backend, waves: list[dict]) -> dict:
    """The same requests straight into vLLM, one generate call per wave, no engine around them."""
    from vllm.inputs import TokensPrompt

    inner = backend.inner
    reset_cache(backend)
    tokens, start = 0, time.perf_counter()
    for wave in waves:
        reqs = wave["requests"]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in reqs]
        params = [inner._params(r, i) for i, r in enumerate(reqs)]
        outs = inner.llm.generate(prompts, params, use_tqdm=False)
        tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
    wall = time.perf_counter() - start
    return {"waves": len(waves), "generated_tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def best_of_n(cfg, backend, verifier, problems, token_budget: int, per_round: int) -> dict:
    """The search's own best_of_n strategy (same shell, prompt, sampling, terminal rule and verifier) with
    each problem given an equal share of `token_budget`, `per_round` samples per request."""
    import dataclasses
    import math

    from mcts_cot.search.config import BestOfNSettings

    share = math.ceil(token_budget / len(problems))
    bon = dataclasses.replace(cfg, strategy="best_of_n", best_of_n=BestOfNSettings(tokens_per_problem=share, wave=per_round))
    result = run_search(bon, backend, verifier, problems)
    result.pop("recorded")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=60, help="problems for (a), (c), (d) (the issue asks 100: ~2x the time)")
    p.add_argument("--concurrent-trees", type=int, default=64)
    p.add_argument("--max-rollouts", type=int, default=8, help="per-tree give-up budget (plain.yaml: 128)")
    p.add_argument("--min-rollouts", type=int, default=4, help="plain.yaml: 32")
    p.add_argument("--success-correct", type=int, default=2, help="plain.yaml: 8")
    p.add_argument("--success-correct-after-min", type=int, default=1, help="plain.yaml: 4")
    p.add_argument("--replay-waves", type=int, default=3, help="(a): replay the search's first N waves raw (0 = all)")
    p.add_argument("--speed-problems", type=int, default=16, help="(b): problems searched at 64 and at 1 concurrent trees")
    p.add_argument("--speed-max-rollouts", type=int, default=2, help="(b): per-tree budget (1 tree at a time is slow)")
    p.add_argument("--bon-per-round", type=int, default=2, help="(d): best-of-N samples per problem per round")
    p.add_argument("--parts", default="a,b,c,d", help="which comparisons to run")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default bench/results/bench_search.json)")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))

    from mcts_cot.backends import make_backend
    from mcts_cot.problems import load_problems
    from mcts_cot.verify import Verifier

    cfg = search_config(args, args.concurrent_trees)
    problems, _ = load_problems(cfg.problems)

    t0 = time.perf_counter()
    backend = RecordingBackend(make_backend(cfg.model, cfg.backend))
    startup = time.perf_counter() - t0
    print(f"vLLM engine start: {startup:.0f} s (one start, reused by every part)", flush=True)
    figures: dict = {"engine_start_s": startup, "sizes": {k: v for k, v in vars(args).items() if k != "out"},
                     "config": "configs/search/plain.yaml with budget "
                               f"success_correct={args.success_correct}, min_rollouts={args.min_rollouts}, "
                               f"success_correct_after_min={args.success_correct_after_min}, max_rollouts={args.max_rollouts}"}
    lines = []
    try:
        with Verifier.from_config(cfg.verify) as verifier:
            # warm-up: one tiny generate so no part pays for first-call compilation
            backend.record = False
            from mcts_cot.backends.base import Request

            backend.generate([Request(prompt_ids=[1, 2, 3], n=1, max_tokens=4, temperature=0.0)])
            backend.record = True

            mcts = None
            if parts & {"a", "c", "d"}:
                mcts = run_search(cfg, backend, verifier, problems)
                recorded = mcts.pop("recorded")
                print(f"search: {mcts['problems']} problems at {cfg.concurrent_trees} concurrent trees: "
                      f"{mcts['wall_s']:.0f} s, {mcts['waves']} waves, {mcts['generated_tokens']} tokens "
                      f"({mcts['tokens_per_s']:.0f} tok/s), solved {mcts['solved']}/{mcts['problems']}, {mcts['status']}",
                      flush=True)
                figures["search"] = mcts
            if "a" in parts:
                k = len(recorded) if args.replay_waves <= 0 else min(args.replay_waves, len(recorded))
                t_k, tok_k = mcts["marks"][k - 1]
                raw = raw_replay(backend, recorded[:k])
                inside = tok_k / t_k
                ratio_a = inside / raw["tokens_per_s"]
                print(f"(a) first {k} waves: search {tok_k} tokens in {t_k:.1f} s = {inside:.1f} tok/s; "
                      f"raw vLLM {raw['generated_tokens']} tokens in {raw['wall_s']:.1f} s = {raw['tokens_per_s']:.1f} tok/s",
                      flush=True)
                figures["a"] = {"waves": k, "search_tokens": tok_k, "search_wall_s": t_k, "search_tokens_per_s": inside,
                                "search_generate_s": sum(w["seconds"] for w in recorded[:k]),
                                "raw": raw, "ratio": ratio_a}
                lines.append(f"(a) search tokens/s / raw vLLM tokens/s = {ratio_a:.2f} (aim >= 0.85)")
            if "c" in parts:
                figures["c"] = {"prefix_cache_hit_rate": mcts["prefix_cache_hit_rate"]}
                print(f"(c) prefix-cache hit rate during the search: {mcts['prefix_cache_hit_rate']:.1%} "
                      f"({mcts['cached_prompt_tokens']} of {mcts['prompt_tokens']} prompt tokens)", flush=True)
                lines.append(f"(c) prefix-cache hit rate = {mcts['prefix_cache_hit_rate']:.1%}")
            if "d" in parts:
                bon = best_of_n(cfg, backend, verifier, problems, mcts["generated_tokens"], args.bon_per_round)
                figures["d"] = {"mcts_solved": mcts["solved"], "bon": bon, "problems": len(problems)}
                ratio_d = mcts["solved"] / max(1, bon["solved"])
                figures["d"]["ratio"] = ratio_d
                print(f"(d) same {mcts['generated_tokens']} tokens: MCTS solved {mcts['solved']}/{len(problems)}, "
                      f"best-of-N solved {bon['solved']}/{len(problems)} with {bon['generated_tokens']} tokens, "
                      f"N ≈ {bon['rollouts'] / len(problems):.1f} ({bon['generated_tokens'] / max(1, bon['rollouts']):.0f} tokens/sample)",
                      flush=True)
                lines.append(f"(d) MCTS solve rate / best-of-N solve rate = {ratio_d:.2f} (aim >= 1.3)")
            if "b" in parts:
                speed = problems[: args.speed_problems]
                sp = argparse.Namespace(**{**vars(args), "max_rollouts": args.speed_max_rollouts,
                                           "min_rollouts": min(args.min_rollouts, args.speed_max_rollouts),
                                           "success_correct": min(args.success_correct, args.speed_max_rollouts)})
                runs = {}
                for c in (args.concurrent_trees, 1):
                    r = run_search(search_config(sp, c), backend, verifier, speed)
                    r.pop("recorded")
                    runs[c] = r
                    print(f"(b) {len(speed)} problems, {c} concurrent: {r['wall_s']:.1f} s, {r['waves']} waves, "
                          f"{r['generated_tokens']} tokens ({r['tokens_per_s']:.1f} tok/s)", flush=True)
                fast, slow = runs[args.concurrent_trees], runs[1]
                ratio_b = slow["wall_s"] / fast["wall_s"]
                figures["b"] = {"many": fast, "one": slow, "ratio": ratio_b}
                lines.append(f"(b) wall(concurrent 1) / wall(concurrent {args.concurrent_trees}) = {ratio_b:.1f}x (aim >= 5x)")
    finally:
        backend.inner.close()
    path = write_result("bench_search", figures, args.out)
    print(f"results: {path}")
    for line in lines:
        print(line)
    return figures


if __name__ == "__main__":
    main()
