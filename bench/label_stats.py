"""What a search run labelled and what its export made of it (docs/RESULTS.md §7):

    python bench/label_stats.py RUN_DIR DATA_DIR

answer terminals by how today's extractor recognises them (a complete box, the closing phrase, or no longer an
answer: a run made before the extractor was tightened), trees by status,
pairs exported, pairs with a non-empty shared prefix and its mean length, and pairs whose rejected side was
cut by a length or depth limit (found by matching each pair's rejected path to its tree's leaves, so rows
exported before the `*_end` columns existed are counted too).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mcts_cot.answers import read_answer
from mcts_cot.io import read_jsonl
from mcts_cot.store import iter_trees

CUT = ("length", "max_depth", "max_tokens")


def label_stats(run_dir: Path, data_dir: Path) -> dict:
    how, status, ends = Counter(), Counter(), {}
    for tree in iter_trees(run_dir):
        status[tree.status] += 1
        how.update(read_answer(n.text)[1] or "not an answer now" for n in tree.nodes if n.terminal == "answer")
        ends.update({(tree.problem["id"], tuple(tree.path_ids(leaf))): leaf.terminal for leaf in tree.leaves()})
    pairs = [row for name in ("pairs.jsonl", "pairs_val.jsonl") if (data_dir / name).exists()
             for row in read_jsonl(data_dir / name)]
    shared = [len(p["prefix_ids"]) for p in pairs if p["prefix_ids"]]
    cut = sum(ends.get((p["problem_id"], tuple(p["prefix_ids"] + p["rejected_ids"]))) in CUT for p in pairs)
    return {"answer_terminals": dict(how), "trees": dict(status), "pairs": len(pairs),
            "pairs_with_shared_prefix": len(shared), "mean_shared_prefix_tokens": sum(shared) / max(1, len(shared)),
            "pairs_rejected_cut_by_limit": cut}


if __name__ == "__main__":
    print(json.dumps(label_stats(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
