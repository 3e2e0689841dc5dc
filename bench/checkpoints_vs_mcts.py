"""Checkpoint branching vs MCTS on the same problems: pairs that pass the export rules per 1,000 generated tokens.

Reads an eval dir of sampled responses (e.g. the DTO recipe's samples/, built-in arithmetic TRAIN problems),
branches them (`mcts-cot checkpoints`, method branch) and searches the same problems with the demo's MCTS
settings, both on one pooled engine, then exports each (checkpoint pairs; the demo's path pairs) and prints
pairs per 1,000 generated tokens. Only generated tokens count; the original trajectories' tokens are reported
beside (they were generated once, by the sampling).

    python bench/checkpoints_vs_mcts.py SAMPLES_DIR OUT [--problems 30] [--per-problem 2] [--backend vllm]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcts_cot.checkpoints.config import CheckpointConfig
from mcts_cot.checkpoints.driver import run_checkpoints
from mcts_cot.config import load_config
from mcts_cot.export import ExportConfig, build, write
from mcts_cot.loop import EnginePool, LoopConfig
from mcts_cot.loop.stages import builtin_problems, stage_config
from mcts_cot.run import run_search, summarize
from mcts_cot.search import SearchConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("samples")
    ap.add_argument("out")
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--per-problem", type=int, default=2)
    ap.add_argument("--backend", default="vllm")
    args = ap.parse_args()
    out = Path(args.out)
    samples = json.loads((Path(args.samples) / "summary.json").read_text())
    with EnginePool() as pool:
        bcfg = load_config(CheckpointConfig, None, [
            f"trajectories.source={args.samples}", f"trajectories.limit={args.problems}",
            f"trajectories.per_problem={args.per_problem}", f"backend.name={args.backend}", f"out={out / 'branch-run'}",
            "branch.checkpoints=2", "branch.n=4", "branch.max_attempts=4", "branch.wave=2"])
        branch = run_checkpoints(bcfg, overwrite=True, backends=pool)
        scfg = stage_config(SearchConfig, LoopConfig().search, **builtin_problems(args.problems, "train"),
                            **{"backend.name": args.backend, "out": str(out / "mcts-run")})
        run_search(scfg, overwrite=True, backends=pool)
    mcts = summarize(out / "mcts-run")
    bexp = _export(out / "branch-run", out / "data-branch", {"strategies": ["checkpoint"], "sft.select": []})
    mexp = _export(out / "mcts-run", out / "data-mcts", dict(LoopConfig().export.set))
    rows = {
        "branch": {"problems": branch["problems_now"], "trajectories": branch["trajectories"],
                   "trajectory_verdicts": branch["trajectory_verdicts"], "trajectory_tokens": branch["trajectory_tokens"],
                   "generated_tokens": branch["generated_tokens"], **bexp},
        "mcts": {"problems": mcts["trees"], "solved": mcts["solved"], "generated_tokens": mcts["generated_tokens"], **mexp},
        "samples_mean_tokens": samples["mean_generated_tokens"],
    }
    for name in ("branch", "mcts"):
        r = rows[name]
        r["pairs_per_1k_tokens"] = round(1000 * r["pairs"] / max(1, r["generated_tokens"]), 3)
    b = rows["branch"]
    b["pairs_per_1k_incl_trajectories"] = round(1000 * b["pairs"] / max(1, b["generated_tokens"] + b["trajectory_tokens"]), 3)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


def _export(run_dir: Path, data: Path, sets: dict) -> dict:
    cfg = load_config(ExportConfig, None, None, **sets)
    result = build(cfg, [run_dir])
    write(result, cfg, data, overwrite=True)
    rows, report = result.report["rows"], result.report
    kinds = {}
    for r in result.pairs:
        kinds[r["strategy"]] = kinds.get(r["strategy"], 0) + 1
    return {"pairs": rows["pairs"] + rows["pairs_val"], "pairs_by_strategy": kinds,
            "problems_with_pairs": report["problems"]["with_pairs"],
            "prefix_tokens": report["pair_lengths"]["prefix"], "pair_rules": report["pairs"]}


if __name__ == "__main__":
    main()
