"""The run dir of `mcts-cot search`: config.yaml, a manifest and a `trees*.jsonl` file (one line per problem)
per shard.

Every reader treats all shard files of a dir (`trees.jsonl`, `trees-<i>-of-<N>.jsonl`) as one run. Each
shard has its own manifest (`manifest.json`, `manifest-<i>-of-<N>.json`) and its own writer: a search holds
an flock on `.<trees file>.lock` while it runs, so a second search into the same file is refused while the
first lives. The kernel drops the lock when its process dies, so a killed run never blocks its resume. (A
driver that runs many workers into one file holds the lock itself and has the workers append.)
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from mcts_cot.errors import UserError
from mcts_cot.io import append_jsonl, iter_jsonl, read_jsonl, repair_jsonl, write_json
from mcts_cot.tree import STOPPED, Tree


def tree_files(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run dir not found")
    return sorted(run_dir.glob("trees*.jsonl"))


def iter_trees(run_dir: str | Path) -> Iterator[Tree]:
    """Every tree of a run (all shards), each problem once: its first finished record, else (after all the
    finished ones) its last `stopped` record, a tree a global limit cut short that a resumed search grows
    again."""
    seen: set[str] = set()
    stopped: dict[str, tuple[dict, str]] = {}
    for path in tree_files(run_dir):
        for line_no, record in iter_jsonl(path):
            pid = record["problem"]["id"]
            if record.get("status") == STOPPED:
                stopped[pid] = record, f"{path}: line {line_no}"
            elif pid not in seen:
                seen.add(pid)
                yield Tree.from_record(record, where=f"{path}: line {line_no}")
    for pid, (record, where) in stopped.items():
        if pid not in seen:
            yield Tree.from_record(record, where=where)


def _try_lock(path: Path) -> BinaryIO | None:
    """An exclusive flock on `path` (created if missing), or None when another process holds it."""
    fh = open(path, "ab")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


class RunDir:
    """A search run dir for one writer of one trees file: refuses a live second writer, refuses a different
    config unless `overwrite`, repairs a torn last line, and knows which problems are finished so a second
    `search` into the same dir continues where the first stopped. Use it as a context manager (or `close()`)
    to release the lock."""

    def __init__(self, path: str | Path, config_hash: str, shard: tuple[int, int] | None = None,
                 overwrite: bool = False):
        self.path = Path(path)
        self.hash = config_hash
        self.shard = shard
        suffix = f"-{shard[0]}-of-{shard[1]}" if shard else ""
        self.trees_path = self.path / f"trees{suffix}.jsonl"
        self.manifest_path = self.path / f"manifest{suffix}.json"
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock(self.trees_path)
        try:
            self._prepare(overwrite)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def _take_lock(self, trees: Path) -> BinaryIO:
        lock = _try_lock(trees.with_name(f".{trees.name}.lock"))
        if lock is None:
            raise UserError(f"{trees}: another search is writing it now; wait for it to end, or use another "
                            "--out (distinct --shard i/N may share a dir)")
        return lock

    def _prepare(self, overwrite: bool) -> None:
        if overwrite:
            self._clear()
        else:
            self._check_config()
        self.repaired_bytes = repair_jsonl(self.trees_path)

    def _check_config(self) -> None:
        for manifest in sorted(self.path.glob("manifest*.json")):
            try:
                old = orjson.loads(manifest.read_bytes()).get("config_hash")
            except orjson.JSONDecodeError:
                raise UserError(f"{manifest}: not valid JSON; fix or delete it, or --overwrite the run") from None
            if old != self.hash:
                raise UserError(f"{manifest}: holds a run of a different config (hash {old}, now {self.hash}); "
                                "use another --out, or --overwrite to start it again")

    def _clear(self) -> None:
        """Delete every shard's trees and manifest, unless another shard is being written right now."""
        others = [p for p in self.path.glob(".trees*.jsonl.lock") if p.name != f".{self.trees_path.name}.lock"]
        held = []
        try:
            for lock_path in others:
                lock = _try_lock(lock_path)
                if lock is None:
                    raise UserError(f"{self.path / lock_path.name[1:-5]}: another search is writing it now; "
                                    "--overwrite would delete it")
                held.append(lock)
            for old in [*tree_files(self.path), *self.path.glob("manifest*.json")]:
                old.unlink(missing_ok=True)
        finally:
            for lock in held:
                lock.close()

    def finished_ids(self) -> set[str]:
        """Problem ids with a finished record in any shard file of this dir (a `stopped` one is grown again)."""
        return {r["problem"]["id"] for p in tree_files(self.path) for r in read_jsonl(p) if r.get("status") != STOPPED}

    def append(self, trees: list[Tree]) -> None:
        """Append finished trees; a failed write (disk full) keeps every earlier line and leaves no torn tail."""
        try:
            append_jsonl(self.trees_path, [t.to_record(self.hash) for t in trees])
        except OSError as exc:
            raise UserError(f"{self.trees_path}: write failed ({exc.strerror or exc}); the trees written before "
                            "are kept; free space and run the same search again to resume") from None

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.manifest_path, {"config_hash": self.hash, **manifest})


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


def run_model(run_dir: str | Path) -> str:
    """The model that grew a run dir's trees, from its config.yaml."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: no config.yaml; is this a `mcts-cot search` run dir?")
    name = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("name")
    if not name:
        raise UserError(f"{path}: lacks model.name, so it does not say which model grew the trees")
    return name
