"""The run dir of `mcts-cot search`: config.yaml, manifest.json and `trees*.jsonl` (one line per problem).

Every reader treats all shard files of a dir (`trees.jsonl`, `trees-<i>-of-<N>.jsonl`) as one run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from mcts_cot.errors import UserError
from mcts_cot.io import append_jsonl, read_jsonl, repair_jsonl, write_json
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


class RunDir:
    """A search run dir: refuses a different config unless `overwrite`, repairs a torn last line, and knows
    which problems are finished so a second `search` into the same dir continues where the first stopped."""

    def __init__(self, path: str | Path, config_hash: str, shard: tuple[int, int] | None = None,
                 overwrite: bool = False):
        self.path = Path(path)
        self.hash = config_hash
        self.shard = shard
        self.trees_path = self.path / (f"trees-{shard[0]}-of-{shard[1]}.jsonl" if shard else "trees.jsonl")
        self._prepare(overwrite)

    def _prepare(self, overwrite: bool) -> None:
        manifest = self.path / "manifest.json"
        if manifest.exists() and not overwrite:
            old = orjson.loads(manifest.read_bytes()).get("config_hash")
            if old != self.hash:
                raise UserError(f"{self.path}: holds a run of a different config (hash {old}, now {self.hash}); "
                                "use another --out, or --overwrite to start it again")
        if overwrite:
            for old in [*tree_files(self.path), manifest] if self.path.is_dir() else []:
                old.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_jsonl(self.trees_path)

    def finished_ids(self) -> set[str]:
        """Problem ids with a record in any shard file of this dir."""
        return {r["problem"]["id"] for p in tree_files(self.path) for r in read_jsonl(p)}

    def append(self, trees: list[Tree]) -> None:
        append_jsonl(self.trees_path, [t.to_record(self.hash) for t in trees])

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.path / "manifest.json", {"config_hash": self.hash, **manifest})


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`i/N` (0 <= i < N) → (i, N)."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= i < N")
    return i, n
