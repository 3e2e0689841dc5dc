"""The `search` command's shell around the engine, the same for every strategy: run dir and its lock, config
hash, resume, shards, the verifier pool, live progress and the manifest."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import config_hash, save_config
from mcts_cot.problems import Context, load_problems
from mcts_cot.progress import progress_bar
from mcts_cot.search import RESUMABLE_KEYS, Engine, SearchConfig, run_waves
from mcts_cot.store import RunDir
from mcts_cot.tree import SCHEMA, STOPPED, Tree


def search_hash(cfg: SearchConfig) -> str:
    """The config hash a run dir is keyed by, leaving out keys a resumed run may change (not the problem limit
    under the allocator: it decides which problems share a budget)."""
    keys = RESUMABLE_KEYS if cfg.allocator.tokens_per_problem is None else tuple(k for k in RESUMABLE_KEYS if k != "problems.limit")
    return config_hash(cfg, exclude=keys)


def run_search(cfg: SearchConfig, shard: tuple[int, int] | None = None, overwrite: bool = False,
               dry_run: bool = False, console: Console | None = None,
               backends: BackendFactory = make_backend) -> dict:
    """Search every problem of `cfg.problems` not yet finished in the run dir `cfg.out`; returns the manifest.

    `dry_run` runs the whole engine on the scripted backend, so a config can be checked in seconds (the CLI
    points `cfg.out` at a temp dir it removes, unless --out is given). The run dir is locked while the search
    runs; a failure (a full disk included) leaves the manifest at status "failed" with its error. `backends`
    builds the engines (an engine pool shares them between stages; tests pass a scripted factory).
    """
    if dry_run:
        cfg = dataclasses.replace(cfg, backend=dataclasses.replace(cfg.backend, name="scripted"))
    problems, load_report = load_problems(cfg.problems, verify=cfg.verify, context=Context.of(cfg))
    if shard:
        problems = problems[shard[0]::shard[1]]
    with RunDir(cfg.out, search_hash(cfg), shard, overwrite) as run:
        save_config(cfg, run.path)
        search = _search
        if cfg.ray.address is not None:  # engine actors on Ray grow the trees; this process writes them
            from mcts_cot.ray_search import search
        return search(cfg, run, problems, load_report, dry_run, console or Console(stderr=True), backends)


def _search(cfg: SearchConfig, run: RunDir, problems, load_report, dry_run: bool, console: Console,
            make: BackendFactory) -> dict:
    from mcts_cot.verify import Verifier

    done = run.finished_ids()
    todo = _todo(cfg, problems, done)
    backends = {"main": make(cfg.model, cfg.backend)}
    if cfg.critic_model:
        backends["critic"] = make(dataclasses.replace(cfg.model, name=cfg.critic_model), cfg.backend)
    tally = _Tally(total=len(problems), done_before=len(done))
    run.write_manifest(_manifest(cfg, run, tally, backends, load_report, extra={"status": "running"}))
    try:
        with Verifier.from_config(cfg.verify) as verifier, progress_bar(console) as bar:
            task = bar.add_task("search", total=len(problems), completed=len(done), info="")
            engine = Engine(cfg, backends, verifier, backends["main"].tokenizer)

            def on_finished(trees: list[Tree]) -> None:
                trees = [t for t in trees if str(t.problem["id"]) not in done]
                run.append(trees)
                tally.add(trees)
                bar.update(task, completed=tally.done_before + tally.finished)

            def on_wave(waves: int, tokens: int, live: int) -> None:
                bar.update(task, info=tally.line(waves, backends["main"].stats, live))

            result = run_waves(engine, todo, on_finished, on_wave)
    except BaseException as exc:
        _record_failure(cfg, run, tally, backends, load_report, exc)
        raise
    finally:
        for backend in backends.values():
            backend.close()
    manifest = _manifest(cfg, run, tally, backends, load_report, extra={
        "status": "stopped" if result["stopped"] else "complete", "stopped": result["stopped"],
        "waves": result["waves"], "wall_s": round(result["seconds"], 2), "repaired_bytes": run.repaired_bytes,
        "unstarted": result["unstarted"],
        "dry_run": dry_run, "out": str(run.path)})
    run.write_manifest(manifest)
    return manifest


def _todo(cfg: SearchConfig, problems: list, done: set[str]) -> list:
    """The problems to grow: the unfinished ones; under the allocator, every problem of a group with an
    unfinished one (their shared budget is handed out again, so the group grows the same trees; the trees
    already written are not written twice)."""
    if cfg.allocator.tokens_per_problem is None:
        return [p for p in problems if p.id not in done]
    from mcts_cot.search.allocator import groups

    return [p for group in groups(problems, cfg.allocator.group) if any(p.id not in done for p in group) for p in group]


def _record_failure(cfg: SearchConfig, run: RunDir, tally: _Tally, backends: dict, load_report,
                    exc: BaseException) -> None:
    """Status "failed" (or "interrupted") with the error, so the manifest never stays at "running". Best
    effort: on a full disk this write may fail too, and the original error is the one to report."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        run.write_manifest(_manifest(cfg, run, tally, backends, load_report,
                                     extra={"status": status, "error": str(exc) or type(exc).__name__}))
    except OSError:
        pass


class _Tally:
    """Running counts for the progress line and the manifest."""

    def __init__(self, total: int, done_before: int):
        self.total, self.done_before = total, done_before
        self.finished = self.solved = self.success = self.correct_leaves = self.stopped = 0
        self.started = time.perf_counter()

    def add(self, trees: list[Tree]) -> None:
        """Count finished trees; a `stopped` one is unfinished (a resumed run grows it again)."""
        for t in trees:
            if t.status == STOPPED:
                self.stopped += 1
                continue
            self.finished += 1
            self.solved += t.stats.get("correct", 0) > 0
            self.success += t.status == "success"
            self.correct_leaves += t.stats.get("correct", 0)

    def line(self, waves: int, stats, live: int) -> str:
        hit = stats.cache_hit_rate
        solved = f"{self.solved / self.finished:.0%}" if self.finished else "-"
        per_tree = f"{self.correct_leaves / self.finished:.1f}" if self.finished else "-"
        return (f"wave {waves} · {live} live · {stats.generated_tokens / max(1e-9, time.perf_counter() - self.started):.0f} tok/s"
                f" · cache {'-' if hit is None else f'{hit:.0%}'} · solved {solved} · correct/tree {per_tree}")


def _manifest(cfg: SearchConfig, run: RunDir, tally: _Tally, backends: dict, load_report, extra: dict) -> dict:
    from mcts_cot.versions import package_versions

    stats = backends["main"].stats
    return {
        "schema": SCHEMA, "command": "search", "strategy": cfg.strategy, "model": cfg.model.name, "backend": cfg.backend.name,
        "problems": {"source": cfg.problems.source, "total": tally.total, "skipped_rows": load_report.skipped,
                     "finished_before": tally.done_before, "finished_now": tally.finished,
                     "solved_now": tally.solved, "success_now": tally.success, "stopped_now": tally.stopped},
        "shard": list(run.shard) if run.shard else None,
        "generated_tokens": stats.generated_tokens, "prompt_tokens": stats.prompt_tokens,
        "prefix_cache_hit_rate": stats.cache_hit_rate, "generate_seconds": round(stats.seconds, 2),
        "tokens_per_s": round(stats.tokens_per_s, 1), "versions": package_versions(), **extra,
    }


def summarize(run_dir: str | Path) -> dict:
    """Counts over every finished tree of a run dir (all shards): what `inspect` prints."""
    from mcts_cot.store import iter_trees

    trees = list(iter_trees(run_dir))
    n = len(trees)
    status: dict[str, int] = {}
    for t in trees:
        status[t.status] = status.get(t.status, 0) + 1
    total = {k: sum(t.stats.get(k, 0) for t in trees) for k in ("rollouts", "correct", "wrong", "no_answer", "unverifiable", "answer_boxed", "answer_phrase",
                                   "generated_tokens", "nodes")}
    return {"trees": n, "status": status, "solved": sum(t.stats.get("correct", 0) > 0 for t in trees),
            "solve_rate": (sum(t.stats.get("correct", 0) > 0 for t in trees) / n) if n else 0.0, **total}
