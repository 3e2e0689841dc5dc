"""The run dir of `mcts-cot search`: config.yaml, manifest.json and `trees*.jsonl` (one line per problem).

Every reader treats all shard files of a dir (`trees.jsonl`, `trees-<i>-of-<N>.jsonl`) as one run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mcts_cot.errors import UserError
from mcts_cot.io import read_jsonl
from mcts_cot.tree import Tree


def tree_files(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run dir not found")
    return sorted(run_dir.glob("trees*.jsonl"))


def iter_trees(run_dir: str | Path) -> Iterator[Tree]:
    """Every finished tree of a run (all shards), each problem once (the first record wins)."""
    seen: set[str] = set()
    for path in tree_files(run_dir):
        for line_no, record in enumerate(read_jsonl(path), start=1):
            pid = record["problem"]["id"]
            if pid in seen:
                continue
            seen.add(pid)
            yield Tree.from_record(record, where=f"{path}: line {line_no}")
