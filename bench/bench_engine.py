"""Engine overhead: the MCTS engine (Engine + run_waves, plain policy) on an instant scripted backend.

Compares, in one run:
  A. the whole search loop (Engine + run_waves, plain policy, UCT, the paper's budget) at
     `--concurrent-trees` live trees, with an instant backend and an instant exact-match verifier;
  B. the bare backend replaying the very same request stream (same Request objects, same waves) with no
     engine around it.
Engine cost = wall(A) - wall(B) - verifier time; the figure of merit is node expansions per second of engine
cost (aim >= 20,000 on one core, so that at GPU step rates the engine costs < 1% of a wave).
A third run (`--real-verifier`, on by default) repeats A with the real math-verify worker pool, to show what
verification adds.

The instant backend returns pre-tokenised completions picked by the request seed (no tokenising, no
decoding), so nearly all of A's time is the engine's. Its completions are arithmetic steps ending in a blank
line (finish=stop) or a boxed answer 0..9 (finish=eos); gold answers are 0..9 too, so trees meet their
success rule, fail, and free their slots as in a real run.

    python bench/bench_engine.py                       # 1024 problems, 256 live trees
    python bench/bench_engine.py --profile             # + cProfile top functions of run A
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from mcts_cot.backends.base import BackendStats, Completion  # noqa: E402
from mcts_cot.config import load_config  # noqa: E402
from mcts_cot.problems import Problem  # noqa: E402
from mcts_cot.search import Engine, SearchConfig, run_waves  # noqa: E402


class InstantBackend:
    """Completions from a fixed pool, chosen by (request seed, sample index): no model, no tokenizer work."""

    def __init__(self, tokenizer, answer_share: float = 0.3, pool: int = 256, seed: int = 0):
        self.tokenizer = tokenizer
        self.stats = BackendStats()
        rng = random.Random(seed)
        self.pool: list[Completion] = []
        for _ in range(pool):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            if rng.random() < answer_share:
                text, finish = f"So {a} + {b} = {a + b}. The answer is \\boxed{{{rng.randint(0, 9)}}}.", "eos"
            else:
                text, finish = f"Step: add {a} and {b} to get {a + b}.\n\n", "stop"
            ids = tokenizer.encode(text, add_special_tokens=False)
            self.pool.append(Completion(token_ids=ids, text=text, logprob=-0.1 * len(ids), finish=finish))
        self.record: list | None = None

    def generate(self, requests):
        if self.record is not None:
            self.record.append(requests)
        pool, size = self.pool, len(self.pool)
        out = []
        tokens = 0
        for req in requests:
            base = (req.seed or 0) * 2654435761
            comps = [pool[(base + i * 40503) % size] for i in range(req.n)]
            tokens += sum(len(c.token_ids) for c in comps)
            out.append(comps)
        self.stats.requests += len(requests)
        self.stats.generated_tokens += tokens
        return out

    def close(self) -> None:
        pass


class InstantVerifier:
    """Exact string match against gold: what the pool answers for these integers, at no cost."""

    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a.strip() == g else "wrong" for g, a in items]


class TimedVerifier:
    """Wraps a verifier and adds up the wall time of its calls."""

    def __init__(self, inner):
        self.inner, self.seconds, self.items = inner, 0.0, 0

    def verify_batch(self, items):
        start = time.perf_counter()
        try:
            return self.inner.verify_batch(items)
        finally:
            self.seconds += time.perf_counter() - start
            self.items += len(items)


def make_config(args) -> SearchConfig:
    base = Path(__file__).resolve().parents[1] / "configs" / "search" / "plain.yaml"
    schedule = [f"schedule={args.schedule}"] if getattr(args, "schedule", None) else []
    return load_config(SearchConfig, base, [f"concurrent_trees={args.concurrent_trees}", "backend.name=scripted",
                                            f"budget.max_rollouts={args.max_rollouts}", *schedule])


def problems(count: int, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed)
    return [Problem(id=f"p{i}", problem=f"What is {rng.randint(0, 9)} plus zero? (#{i})",
                    answer=str(rng.randint(0, 9))) for i in range(count)]


def search(cfg: SearchConfig, tokenizer, verifier, probs: list[Problem], record: bool = False,
           profile: cProfile.Profile | None = None) -> dict:
    backend = InstantBackend(tokenizer)
    backend.record = [] if record else None
    timed = TimedVerifier(verifier)
    engine = Engine(cfg, {"main": backend}, timed, tokenizer)
    finished = []
    if profile:
        profile.enable()
    start, cpu = time.perf_counter(), time.process_time()
    result = run_waves(engine, probs, finished.extend)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if profile:
        profile.disable()
    status: dict[str, int] = {}
    for t in finished:
        status[t.status] = status.get(t.status, 0) + 1
    return {
        "wall_s": wall, "cpu_s": cpu, "waves": result["waves"], "trees": len(finished), "status": status,
        "expansions": sum(t.stats["expansions"] for t in finished),
        "nodes": sum(t.stats["nodes"] for t in finished),
        "rollouts": sum(t.stats["rollouts"] for t in finished),
        "requests": backend.stats.requests, "generated_tokens": backend.stats.generated_tokens,
        "verify_s": timed.seconds, "verify_items": timed.items, "recorded": backend.record,
        "tokenizer": tokenizer,
    }


def replay(tokenizer, waves: list) -> tuple[float, float]:
    """Wall and CPU time of the bare backend answering the same requests, wave by wave, with no engine."""
    backend = InstantBackend(tokenizer)
    start, cpu = time.perf_counter(), time.process_time()
    for requests in waves:
        backend.generate(requests)
    return time.perf_counter() - start, time.process_time() - cpu


def load_tok(name: str):
    if name == "byte":
        from mcts_cot.tiny import byte_tokenizer

        return byte_tokenizer()
    from mcts_cot.models import load_tokenizer

    return load_tokenizer(name)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=1024, help="problems searched (trees grown)")
    p.add_argument("--concurrent-trees", type=int, default=256)
    p.add_argument("--max-rollouts", type=int, default=128, help="per-tree give-up budget (plain.yaml: 128)")
    p.add_argument("--schedule", choices=["continuous", "waves"], default=None, help="the engine's schedule (default: the config's)")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer for prompts: a model alias/folder or 'byte'")
    p.add_argument("--no-real-verifier", action="store_true", help="skip run C (the math-verify pool)")
    p.add_argument("--verify-workers", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="cProfile run A and print the top functions")
    p.add_argument("--gpu-step-ms", type=float, default=30.0,
                   help="a GPU wave's generation time per step, for the projected overhead share")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/bench_engine.json)")
    args = p.parse_args(argv)

    tok = load_tok(args.tokenizer)
    cfg = make_config(args)
    probs = problems(args.problems)
    search(cfg, tok, InstantVerifier(), probs[: min(32, len(probs))])  # warm caches / imports

    a = search(cfg, tok, InstantVerifier(), probs, record=True)
    bare_s, bare_cpu = replay(tok, a.pop("recorded"))
    engine_s = a["wall_s"] - bare_s - a["verify_s"]
    rate = a["expansions"] / engine_s
    # CPU time of this process: robust to other jobs taking the cores (wall time is not, on a shared machine).
    engine_cpu = a["cpu_s"] - bare_cpu - a["verify_s"]
    rate_cpu = a["expansions"] / engine_cpu
    print(f"A  search loop, instant backend + instant verifier: {a['wall_s']:.2f} s for {a['trees']} trees, "
          f"{a['expansions']} expansions, {a['nodes']} nodes, {a['waves']} waves ({a['status']})")
    print(f"B  bare backend, same {a['requests']} requests:        {bare_s:.3f} s")
    print(f"   engine cost = A - B - verifier ({a['verify_s']:.3f} s) = {engine_s:.2f} s "
          f"-> {rate:,.0f} expansions/s, {1e6 * engine_s / a['expansions']:.1f} us/expansion, "
          f"{1e3 * engine_s / a['waves']:.2f} ms/wave at {args.concurrent_trees} live trees")
    print(f"   by process CPU time (robust to a busy machine): {engine_cpu:.2f} s -> {rate_cpu:,.0f} expansions/s, "
          f"{1e6 * engine_cpu / a['expansions']:.1f} us/expansion")
    per_wave = engine_s / a["waves"]
    gpu_wave = args.gpu_step_ms / 1e3 * (cfg.policy.max_step_tokens / 2)  # a wave: ~half max_step_tokens decode steps
    share = per_wave / (per_wave + gpu_wave)
    print(f"   projected engine share of a GPU wave ({args.gpu_step_ms:.0f} ms/step x {cfg.policy.max_step_tokens // 2} steps): "
          f"{share:.2%}")

    figures = {
        "sizes": {"problems": args.problems, "concurrent_trees": args.concurrent_trees,
                  "max_rollouts": args.max_rollouts, "tokenizer": args.tokenizer},
        "search_instant": {k: v for k, v in a.items() if k != "tokenizer"},
        "bare_backend_s": bare_s, "engine_s": engine_s, "expansions_per_s": rate,
        "engine_cpu_s": engine_cpu, "expansions_per_cpu_s": rate_cpu,
        "us_per_expansion": 1e6 * engine_s / a["expansions"], "ms_per_wave": 1e3 * per_wave,
        "projected_gpu_share": share, "aim_expansions_per_s": 20000,
    }

    if not args.no_real_verifier:
        from mcts_cot.verify import Verifier

        with Verifier(workers=args.verify_workers) as verifier:
            c = search(cfg, tok, verifier, probs)
        c.pop("recorded")
        c_engine = c["wall_s"] - bare_s - c["verify_s"]
        print(f"C  search loop, instant backend + math-verify pool ({args.verify_workers} workers): {c['wall_s']:.2f} s, "
              f"verify {c['verify_s']:.2f} s for {c['verify_items']} items "
              f"({1e3 * c['verify_s'] / max(1, c['waves']):.2f} ms/wave); "
              f"{c['expansions'] / c['wall_s']:,.0f} expansions/s end to end")
        figures["search_real_verifier"] = {k: v for k, v in c.items() if k != "tokenizer"}
        figures["real_verifier_expansions_per_s_end_to_end"] = c["expansions"] / c["wall_s"]
        figures["real_verifier_engine_s"] = c_engine

    if args.profile:
        prof = cProfile.Profile()
        search(cfg, tok, InstantVerifier(), probs, profile=prof)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        print(buf.getvalue())
        figures["profile_top"] = buf.getvalue()

    ratio = a["wall_s"] / bare_s
    figures["ratio_search_over_bare_backend"] = ratio
    path = write_result("bench_engine", figures, args.out)
    print(f"results: {path}")
    print(f"ratio: engine {rate:,.0f} expansions/s (wall; {rate_cpu:,.0f} by CPU time) = {rate / 20000:.2f}x the "
          f"20,000/s aim (search loop wall / bare backend wall = {ratio:.1f}x)")
    return figures


if __name__ == "__main__":
    main()
