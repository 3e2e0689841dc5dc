"""Batch occupancy under a GPU cost model: lock-step waves against continuous scheduling, in one run.

The backend is `mcts_cot.backends.cost_model.CostModelBackend`: vLLM-style continuous batching in simulated time
(`max_num_seqs` sequences at most, one token per running sequence per step, a finished sequence frees its slot at
once) with the step latency of its stated GPU model, fed with the real steps of real runs
(bench/data/real_steps.json: 1,477 steps of 42 trees grown by the embedded model on vLLM; a request draws its
completions from its own problem's steps by seed). The search is the demo's (configs/recipes/demo.yaml's search
settings) on `--problems` problems cycling through those 42, `--trees` live trees.

    occupancy = sum over steps of running sequences / (steps x max_num_seqs)

Printed for waves and for continuous with k = 1, 2 and 4 leaves in flight per tree, without the allocator (the
demo's per-tree budget) and with it (the demo's: 1,024 tokens per problem, groups of `--trees`), plus simulated
seconds and generated tokens per simulated second. The stated configuration of the aim (>= 85% continuous) is
64 trees, k = 4, max_num_seqs = 256. Light (no model): about two minutes on one core.

    python bench/bench_occupancy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

DATA = ROOT / "bench" / "data" / "real_steps.json"
ARMS = (("waves", 1), ("continuous", 1), ("continuous", 2), ("continuous", 4))


class ExactVerifier:
    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a.strip() == g else "wrong" for g, a in items]


def search_config(args, schedule: str, k: int, allocated: bool):
    import yaml

    from mcts_cot.config import load_config
    from mcts_cot.search import SearchConfig

    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "demo.yaml").read_text())
    sets = {k_: v for k_, v in recipe["search"]["set"].items() if allocated or not k_.startswith("allocator.")}
    if allocated:
        sets["allocator.group"] = args.trees
    return load_config(SearchConfig, None, [
        *(f"{k_}={v}" for k_, v in sets.items()), "backend.name=scripted", f"schedule={schedule}",
        f"in_flight_per_tree={k}", f"concurrent_trees={args.trees}", f"seed={args.seed}"])


def run(args, tok, data, schedule: str, k: int, allocated: bool) -> dict:
    from mcts_cot.backends.base import Completion
    from mcts_cot.backends.cost_model import CostModelBackend
    from mcts_cot.problems import Problem
    from mcts_cot.prompts import Prompter
    from mcts_cot.search import Engine, run_waves

    cfg = search_config(args, schedule, k, allocated)
    prompter = Prompter(tok, cfg.prompt)
    real = data["problems"]
    prompts = [prompter(p["problem"]) for p in real]
    pools = [[Completion(token_ids=ids, text=text, logprob=lp, finish=finish) for text, finish, ids, lp in p["steps"]]
             for p in real]
    problems = [Problem(id=f"sim-{i}", problem=real[i % len(real)]["problem"], answer=real[i % len(real)]["answer"])
                for i in range(args.problems)]
    backend = CostModelBackend(tok, prompts, pools, max_num_seqs=args.max_num_seqs)
    engine = Engine(cfg, {"main": backend}, ExactVerifier(), tok)
    trees = []
    start = time.perf_counter()
    run_waves(engine, problems, trees.extend)
    wall = time.perf_counter() - start
    occ = backend.occupancy
    status: dict[str, int] = {}
    for t in trees:
        status[t.status] = status.get(t.status, 0) + 1
    return {
        "schedule": schedule, "k": k if schedule == "continuous" else None, "allocator": allocated,
        "occupancy": occ.share(args.max_num_seqs), "steps": occ.steps, "simulated_s": occ.seconds,
        "generated_tokens": backend.stats.generated_tokens, "tokens_per_simulated_s": backend.stats.generated_tokens / occ.seconds,
        "prefill_tokens": occ.prefill_tokens, "engine_wall_s": wall, "status": status,
        "trees": {t.problem["id"]: [(n.parent, n.text) for n in t.nodes] for t in trees},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=256)
    p.add_argument("--trees", type=int, default=64, help="live trees (concurrent_trees; the allocator's group)")
    p.add_argument("--max-num-seqs", type=int, default=256, help="the engine's batch slots (vLLM's max_num_seqs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from mcts_cot.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    data = json.loads(DATA.read_text())
    rows = []
    for allocated in (False, True):
        for schedule, k in ARMS:
            row = run(args, tok, data, schedule, k, allocated)
            rows.append(row)
            print(f"{'allocator' if allocated else 'per-tree budget':15s} {schedule:10s} k={row['k']}  occupancy "
                  f"{row['occupancy']:6.1%}  {row['steps']:6d} steps  {row['simulated_s']:7.1f} simulated s  "
                  f"{row['tokens_per_simulated_s']:7.0f} tok/simulated s  {row['status']}", flush=True)
    n = len(ARMS)
    same = {a: rows[n * a]["trees"] == rows[n * a + 1]["trees"] for a in (0, 1)}
    for row in rows:
        row.pop("trees")
    figures = {"problems": args.problems, "trees": args.trees, "max_num_seqs": args.max_num_seqs,
               "step_model": "13.3 ms + 0.41 ms x running + 0.10 ms x prefill token (mcts_cot/backends/cost_model.py)",
               "data": json.loads(DATA.read_text())["source"], "rows": rows,
               "waves_equal_continuous_k1_trees": {"per_tree_budget": same[0], "allocator": same[1]}}
    path = write_result("bench_occupancy", figures, args.out)
    print(f"trees of waves and continuous k=1 equal: per-tree budget {same[0]}, allocator {same[1]}")
    print(f"results: {path}")
    w, c4 = rows[0], rows[3]
    print(f"ratio: occupancy (64 trees, max_num_seqs {args.max_num_seqs}, per-tree budget) waves {w['occupancy']:.1%} vs "
          f"continuous k=4 {c4['occupancy']:.1%} (aim >= 85%; k=1 {rows[1]['occupancy']:.1%}, k=2 {rows[2]['occupancy']:.1%}); "
          f"generated tokens per simulated second continuous k=4 / waves = {c4['tokens_per_simulated_s'] / w['tokens_per_simulated_s']:.2f}x")
    return figures


if __name__ == "__main__":
    main()
