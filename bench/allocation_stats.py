"""Where an allocator run spent its tokens, and how wide its expansions were (docs/RESULTS.md §8):

    python bench/allocation_stats.py RUN_DIR [RUN_DIR ...]

per run: trees by how they ended (closed with enough correct ends, closed as hopeless, budget spent, the
strategy's own rule), generated tokens per tree by outcome (no correct end / some / at least enough_correct),
and for MCTS the children per expansion of non-root nodes (adaptive width: full or narrow) and the quantiles
of a step's mean log-probability per token (children are counted after identical siblings merged) (what `selection.uncertain_logprob` is compared with).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from _common import command, machine

from mcts_cot.config import load_config
from mcts_cot.search import SearchConfig
from mcts_cot.store import iter_trees


def ending(reason: str) -> str:
    for key, name in (("enough_correct", "closed: enough correct"), ("hopeless", "closed: hopeless"),
                      ("budget spent", "budget spent")):
        if key in reason:
            return name
    return "own rule"


def stats(run_dir: Path) -> dict:
    cfg = load_config(SearchConfig, run_dir / "config.yaml")
    endings, spent, widths, logprobs = Counter(), {}, Counter(), []
    for tree in iter_trees(run_dir):
        endings[ending(tree.reason)] += 1
        correct = tree.stats.get("correct", 0)
        band = "none correct" if not correct else ("enough correct" if correct >= cfg.allocator.enough_correct else "some correct")
        spent.setdefault(band, []).append(tree.stats.get("generated_tokens", 0))
        for node in tree.nodes[1:]:
            if node.children and node.parent is not None:
                widths[len(node.children)] += 1
            if node.token_ids and node.kind == "step":
                logprobs.append(node.logprob / len(node.token_ids))
    quantiles = statistics.quantiles(logprobs, n=4) if len(logprobs) > 3 else []
    return {"strategy": cfg.strategy, "endings": dict(endings),
            "tokens_per_tree": {k: {"trees": len(v), "mean": round(statistics.mean(v))} for k, v in spent.items()},
            "children_per_expansion_below_root": dict(sorted(widths.items())),
            "step_mean_logprob_quartiles": [round(q, 3) for q in quantiles]}


def main() -> None:
    print(json.dumps({"command": command(), "machine": machine(), "runs": {d: stats(Path(d)) for d in sys.argv[1:]}}, indent=1))


if __name__ == "__main__":
    main()
