"""`mcts-cot checkpoints`: trajectories in, a run dir of checkpoint trees out.

The shell of a checkpoint run: load the trajectories, tokenise and cut them, verify every one once (one
batch, the search's extractor and verifier), build one tree per problem (`Branching` or `Dto`) and grow them
with the search engine's waves (`Engine.wave`) over one backend, up to `concurrent_trees` at a time. The run
dir is a search run dir (`store.RunDir`: config hash, lock, resume, trees*.jsonl, manifest), so export-pairs,
inspect and view read it like any other.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.checkpoints import trajectories
from mcts_cot.checkpoints.branching import Branching
from mcts_cot.checkpoints.config import CheckpointConfig
from mcts_cot.checkpoints.dto import Dto
from mcts_cot.checkpoints.seeded import Seed, prepare
from mcts_cot.config import config_hash, save_config
from mcts_cot.errors import UserError
from mcts_cot.problems import Problem
from mcts_cot.progress import progress_bar
from mcts_cot.store import RunDir
from mcts_cot.tree import SCHEMA

METHODS = {"branch": Branching, "dto": Dto}
RESUMABLE = ("concurrent_trees", "out", "verify.workers", "backend.cpu_kv_cache_gib", "backend.gpu_memory_utilization")


def run_checkpoints(cfg: CheckpointConfig, overwrite: bool = False, console: Console | None = None,
                    backends: BackendFactory = make_backend) -> dict:
    """Grow the checkpoint tree of every problem not yet finished in `cfg.out`; returns the manifest."""
    if cfg.dto.judge_model:
        raise UserError("dto.judge_model: the pruning judge is a hook that is not implemented yet; leave it null")
    if not cfg.trajectories.source:
        raise UserError("checkpoints: give the trajectories (--trajectories or --set trajectories.source=...)")
    t = cfg.trajectories
    groups = trajectories.load(t.source, t.text_field, t.limit, t.per_problem, t.close_with_gold)
    with RunDir(cfg.out, config_hash(cfg, exclude=RESUMABLE), None, overwrite) as run:
        save_config(cfg, run.path)
        done = run.finished_ids()
        todo = {pid: trajs for pid, trajs in groups.items() if pid not in done}
        backend = backends(cfg.model, cfg.backend)
        try:
            result = _grow(cfg, todo, backend, run, console or Console(stderr=True))
        finally:
            backend.close()
        manifest = {"schema": SCHEMA, "command": "checkpoints", "method": cfg.method, "model": cfg.model.name,
                    "backend": cfg.backend.name, "trajectories": t.source, "problems_total": len(groups),
                    "finished_before": len(done), **result, "generated_tokens": backend.stats.generated_tokens,
                    "prompt_tokens": backend.stats.prompt_tokens, "prefix_cache_hit_rate": backend.stats.cache_hit_rate,
                    "status": "complete"}
        run.write_manifest(manifest)
        return manifest


def _grow(cfg: CheckpointConfig, todo: dict, backend, run: RunDir, console: Console) -> dict:
    from mcts_cot.search import Engine, SearchConfig
    from mcts_cot.verify import Verifier

    start = time.perf_counter()
    tok = backend.tokenizer
    with Verifier.from_config(cfg.verify) as verifier, progress_bar(console) as bar:
        engine = Engine(SearchConfig(model=cfg.model, backend=cfg.backend, prompt=cfg.prompt, seed=cfg.seed),
                        {"main": backend}, verifier, tok)
        seeds = _seeds(cfg, todo, tok, verifier)
        queue, live, finished = deque(seeds.items()), [], []
        task = bar.add_task(f"checkpoints ({cfg.method})", total=len(seeds), info="")
        while queue or live:
            while queue and len(live) < cfg.concurrent_trees:
                live.append(_grower(cfg, engine, *queue.popleft()))
            report = engine.wave(live)
            run.append(report.finished)
            finished += report.finished
            done = {id(t) for t in report.finished}
            live = [g for g in live if id(g.tree) not in done]
            bar.update(task, completed=len(finished), info=f"wave {engine.waves} · {len(live)} live")
    originals = [s for ss in seeds.values() for _, s in ss]
    return {"problems_now": len(finished), "trajectories": len(originals),
            "trajectory_verdicts": _count(s.verdict for s in originals),
            "trajectory_tokens": sum(len(p) for s in originals for p in s.pieces),
            "waves": engine.waves, "wall_s": round(time.perf_counter() - start, 2)}


def _seeds(cfg: CheckpointConfig, todo: dict, tok, verifier) -> dict[str, list[tuple[Problem, Seed]]]:
    """Every trajectory cut into paragraphs and verified, in one verifier batch. Empty texts are dropped."""
    out = {pid: [(tr.problem, prepare(tr, tok, cfg.split.breaks, cfg.split.markers)) for tr in trajs if tr.text.strip()]
           for pid, trajs in todo.items()}
    flat = [(p, s) for items in out.values() for p, s in items]
    verdicts = verifier.verify_batch([(p.answer, s.answer) for p, s in flat])
    for (_, seed), verdict in zip(flat, verdicts, strict=True):
        seed.verdict = verdict if seed.answer is not None else "no_answer"
    return {pid: items for pid, items in out.items() if items}


def _grower(cfg: CheckpointConfig, engine, pid: str, items: list[tuple[Problem, Seed]]):
    from mcts_cot.prompts import prompt_ids

    problem = items[0][0]
    ids = items[0][1].prompt_ids or prompt_ids(engine.tok, cfg.prompt, problem.problem)
    seeds = [s for _, s in items]
    return METHODS[cfg.method](problem, ids, engine.tok.decode(ids), engine.policy, cfg, seeds)


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))
