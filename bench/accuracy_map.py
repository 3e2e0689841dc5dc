"""The base model's accuracy map: greedy accuracy and pass@8 on built-in problems of each difficulty and on
GSM8K test, each with its 95% Wilson interval. It tells the search where the model is neither always right
nor hopeless, which is where a tree has something to reuse.

One vLLM engine serves every eval (the workflows' engine pool); each eval writes its own eval dir under --out.

    flock /tmp/mcts-heavy.lock python bench/accuracy_map.py                 # difficulties 1-6 + GSM8K test
    flock /tmp/mcts-heavy.lock python bench/accuracy_map.py --greedy 200 --sampled 100 --sets 1,2,3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"


def problem_sets(names: list[str]) -> dict[str, dict]:
    """--set overrides of each problem set: built-in problems of exactly d steps (test split) or GSM8K test."""
    sets = {}
    for name in names:
        if name == "gsm8k":
            sets[name] = {"problems.source": str(GSM8K)}
        else:
            sets[f"{name} steps"] = {"problems.source": "builtin:arithmetic:{n}", "problems.split": "test",
                                     "problems.difficulty": f"{name}-{name}"}  # exactly `name` steps
    return sets


def evaluate(pool, name: str, sets: dict, n: int, sampled: bool, out: Path, max_tokens: int) -> dict:
    from mcts_cot.config import load_config, set_value
    from mcts_cot.evaluate import EvalConfig, run_eval

    cfg = load_config(EvalConfig, None, None)
    sets = {k: v.format(n=n) if isinstance(v, str) else v for k, v in sets.items()}
    for key, value in {**sets, "problems.limit": n, "sampling.max_tokens": max_tokens}.items():
        set_value(cfg, key, value, where="accuracy_map")
    if sampled:
        for key, value in {"sampling.n": 8, "sampling.temperature": 0.7, "sampling.top_p": 1.0, "k": 8}.items():
            set_value(cfg, key, value, where="accuracy_map")
    kind = "sampled" if sampled else "greedy"
    summary = run_eval(cfg, out / f"{name.replace(' ', '-')}-{kind}", overwrite=True, backends=pool)
    return {k: summary[k] for k in ("accuracy", "pass@8", "problem_count", "no_answer_rate", "mean_generated_tokens",
                                    "ci95") if k in summary}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="1,2,3,4,5,6,gsm8k", help="difficulties and/or gsm8k")
    p.add_argument("--greedy", type=int, default=200, help="problems per set, greedy")
    p.add_argument("--sampled", type=int, default=100, help="problems per set, 8 samples at T = 0.7 (0 skips)")
    p.add_argument("--max-tokens", type=int, default=384, help="per answer (GSM8K solutions are longer than built-in ones)")
    p.add_argument("--out", default="runs/accuracy-map", help="eval dirs")
    args = p.parse_args(argv)

    from mcts_cot.evaluate import with_interval
    from mcts_cot.loop import EnginePool

    out = Path(args.out)
    figures, lines = {}, ["| problems | greedy accuracy | pass@8 | sampled accuracy | no answer (greedy) |", "|---|---|---|---|---|"]
    with EnginePool() as pool:
        for name, sets in problem_sets(args.sets.split(",")).items():
            greedy = evaluate(pool, name, sets, args.greedy, False, out, args.max_tokens)
            sampled = evaluate(pool, name, sets, args.sampled, True, out, args.max_tokens) if args.sampled else None
            figures[name] = {"greedy": greedy, "sampled": sampled}
            pass8 = with_interval(sampled["pass@8"], sampled["problem_count"]) if sampled else "-"
            acc8 = with_interval(sampled["accuracy"], sampled["problem_count"]) if sampled else "-"
            lines.append(f"| {name} ({greedy['problem_count']} / {sampled['problem_count'] if sampled else 0}) | "
                         f"{with_interval(greedy['accuracy'], greedy['problem_count'])} | {pass8} | {acc8} | "
                         f"{greedy['no_answer_rate']:.1%} |")
            print(lines[-1], flush=True)
    path = write_result("accuracy_map", {"sizes": vars(args), "sets": figures, "table": lines})
    print("\n".join(lines))
    print(f"results: {path}")
    return figures


if __name__ == "__main__":
    main()
