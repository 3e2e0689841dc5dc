"""The closed loop (`mcts-cot loop`, `mcts-cot demo`): evaluate the base model, then per round search with the
current model, export, train from it and evaluate the result. Round k searches with the model of round k-1
(on-policy data, as MCTS-DPO and Step-DPO do). Ends with a before / after table.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import option, save_config, section, to_dict
from mcts_cot.errors import UserError
from mcts_cot.loop.engines import EnginePool
from mcts_cot.loop.reports import before_after_table, write_results
from mcts_cot.loop.stages import Runner, Stage, builtin_problems, scaled, stage_config
from mcts_cot.loop.timebox import TimeBox, cached_eval
from mcts_cot.tables import Grid


@dataclasses.dataclass
class LoopConfig:
    """`mcts-cot loop` / `mcts-cot demo`: search → export → train → eval, for one or more rounds.

    The defaults ARE the demo recipe (configs/recipes/demo.yaml spells them out): a 2-core CPU runs it in
    under 20 minutes. `scale` multiplies the problem counts.
    """

    model: str = option("smollm2-135m", "The base model: alias, HF id or folder.")
    backend: Literal["vllm", "hf", "scripted"] = option("vllm", "Generation engine of search and eval.")
    out: str = option("runs/demo", "Output dir: base/, round-<k>/, results.json, results.md.")
    rounds: int = option(1, "Rounds; round k searches with the model trained in round k-1 and trains from it.", ge=1)
    scale: float = option(1.0, "Multiplies train_problems, test_problems and sampled_test_problems; under time_budget_s the train count is only a cap.", gt=0)
    time_budget_s: float | None = option(1200.0, "Fit the run in about this many seconds whatever the CPU: the search takes train problems group by group while its share lasts (needs search allocator.tokens_per_problem), training stops at its share; null: the sizes as given.", gt=0)
    search_share: float = option(0.6, "time_budget_s: the search's share of each round's time after the expected evals (training gets the rest).", gt=0, lt=1)
    train_problems: int = option(240, "Built-in arithmetic TRAIN problems per round (builtin:arithmetic:N, split train); with time_budget_s, the most the search may take.", ge=1)
    fresh_problems: bool = option(True, "Round k searches a new train set (generator seed k-1) instead of the same problems again.")
    test_problems: int = option(200, "Built-in arithmetic TEST problems of the greedy eval (split test: never a train problem).", ge=1)
    sampled_test_problems: int = option(0, "Test problems of the sampled eval (pass@k); 0 skips it.", ge=0)
    search: Stage = section(lambda: Stage(set={
        "budget.success_correct": 4, "budget.min_rollouts": 8, "budget.success_correct_after_min": 2,
        "budget.max_rollouts": 16, "policy.max_path_tokens": 384, "policy.max_depth": 8,
        "allocator.tokens_per_problem": 1024, "allocator.group": 24, "allocator.step_tokens": 512, "allocator.enough_correct": 4,
        "selection.width": "adaptive"}),
        "The search stage (SearchConfig). model, backend, problems and out are set by the loop.")
    export: Stage = section(lambda: Stage(set={
        "sft.select": ["longest"], "sft.max_per_problem": 1,
        "path.chosen": "shortest", "path.rejected_per_chosen": 2, "path.max_per_problem": 2}),
        "The export stage (ExportConfig).")
    train: Stage = section(lambda: Stage(set={
        "objective": "cdpo", "alpha": 1.0, "masking": True, "prefix_sharing": True, "bf16": "auto", "epsilon": 0.1, "beta": 0.1,
        "learning_rate": 2e-5, "epochs": 2.0, "per_device_train_batch_size": 4, "max_length": 768,
        "logging_steps": 5, "save_steps": 100000}),
        "The train stage (TrainConfig); the defaults are the paper's joint recipe (cDPO + α·NLL + masking).")
    eval: Stage = section(Stage, "The greedy eval (EvalConfig; greedy by default).")
    sampled_eval: Stage = section(lambda: Stage(set={
        "sampling.n": 8, "sampling.temperature": 0.7, "sampling.top_p": 1.0, "k": 8, "chunk": 16}),
        "The sampled eval that gives pass@k (EvalConfig).")
    seed: int = option(0, "Seed of every stage (search, backend, export split, training).", ge=0)


def _evals(runner: Runner, cfg: LoopConfig, model: str, where: Path, label: str) -> dict:
    """The greedy eval (cached across runs for a named model) and, if asked, the sampled one; `seconds` is
    what they took (or took when they ran), the time box's estimate for the next model's evals."""
    from mcts_cot.evaluate import EvalConfig

    fixed = {"model.name": model, "backend.name": cfg.backend, "backend.seed": cfg.seed}
    greedy = stage_config(EvalConfig, cfg.eval, **fixed, **builtin_problems(scaled(cfg.test_problems, cfg.scale), "test"))
    summary, seconds = cached_eval(runner, f"{label}: greedy eval", greedy, where / "eval-greedy")
    out = {"greedy": summary, "greedy_dir": str(where / "eval-greedy"), "seconds": seconds}
    n_sampled = scaled(cfg.sampled_test_problems, cfg.scale)
    if n_sampled:
        sampled = stage_config(EvalConfig, cfg.sampled_eval, **fixed, **builtin_problems(n_sampled, "test"))
        out["sampled"], sampled_s = cached_eval(runner, f"{label}: sampled eval", sampled, where / "eval-sampled")
        out["sampled_dir"], out["seconds"] = str(where / "eval-sampled"), seconds + sampled_s
    return out


def run_loop(cfg: LoopConfig, console: Console | None = None, backends: BackendFactory = make_backend) -> dict:
    """Base eval, then `rounds` × (search with the current model → export → train from it → eval).

    Writes `results.json` / `results.md` in `cfg.out` and returns the results dict. `backends` builds the
    engines, which a pool shares between the stages of one model."""
    from mcts_cot.export import ExportConfig
    from mcts_cot.search import SearchConfig
    from trainers.config import TrainConfig

    console = console or Console(stderr=True)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root)
    start = time.perf_counter()
    box = TimeBox(cfg.time_budget_s, cfg.search_share) if cfg.time_budget_s else None
    results: dict[str, Any] = {"recipe": to_dict(cfg), "rows": [], "rounds": []}
    with EnginePool(backends) as pool:
        runner = Runner(console, pool)
        model = cfg.model
        results["rows"].append({"name": "base", "model": model, **_evals(runner, cfg, model, root / "base", "base")})
        eval_s = results["rows"][0]["seconds"]
        for k in range(1, cfg.rounds + 1):
            rdir = root / f"round-{k}"
            search = stage_config(SearchConfig, cfg.search, **{
                "model.name": model, "backend.name": cfg.backend, "backend.seed": cfg.seed, "seed": cfg.seed,
                **builtin_problems(scaled(cfg.train_problems, cfg.scale), "train", (k - 1) if cfg.fresh_problems else 0)})
            sizes = _fit_search(box, search, eval_s, cfg.rounds - k + 1, console)
            summary = runner.search(f"round {k}: search with {model}", search, rdir / "search")
            export = stage_config(ExportConfig, cfg.export, seed=cfg.seed)
            report = runner.export(f"round {k}: export", export, [rdir / "search"], rdir / "data")
            if report["rows"]["pairs"] == 0 and cfg.train.set.get("objective", "cdpo") != "sft":
                raise UserError(f"round {k}: the search gave no preference pairs ({rdir / 'search'}); "
                                "raise train_problems or the search budget")
            train = stage_config(TrainConfig, cfg.train, **{"model.name": model, "data": str(rdir / "data"),
                                                            "seed": cfg.seed})
            if box:
                train.max_wall_s = sizes["train_wall_s"] = round(box.train_s(eval_s, cfg.rounds - k + 1))
                console.print(f"time box: training stops after {train.max_wall_s} s")
            metrics = runner.train(f"round {k}: train", train, rdir / "model")
            model = str(rdir / "model")
            evals = _evals(runner, cfg, model, rdir, f"round {k}")
            eval_s = evals["seconds"]
            results["rounds"].append({"round": k, "sizes": sizes, "search_dir": str(rdir / "search"), "search": summary,
                                      "data_dir": str(rdir / "data"), "data": report["rows"], "model_dir": model,
                                      "train": {"objective": metrics["objective"], "steps": metrics["global_step"],
                                                "wall_seconds": metrics["wall_seconds"]}})
            results["rows"].append({"name": f"round {k}", "model": model, **evals})
        results["engine_starts"] = pool.starts
    results["stage_seconds"] = runner.times
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_results(root, results, before_after_table(results["rows"]), console, where_table(results, root))
    return results


def _fit_search(box: TimeBox | None, search, eval_s: float, rounds_left: int, console: Console) -> dict:
    """With a time box: the search's wall time (`allocator.wall_s`), from the time left and the expected eval."""
    if box is None:
        return {}
    if search.allocator.tokens_per_problem is None:
        raise UserError("time_budget_s sizes the search by the allocator's groups: set search allocator.tokens_per_problem "
                        "(or time_budget_s: null)")
    search.allocator.wall_s = round(box.search_s(eval_s, rounds_left))
    console.print(f"time box: {box.left():.0f} s left; the search takes groups of {search.allocator.group} problems "
                  f"while {search.allocator.wall_s} s last, training gets the rest but {eval_s:.0f} s for the eval after")
    return {"search_wall_s": search.allocator.wall_s, "expected_eval_s": round(eval_s)}


def where_table(results: dict, root: Path) -> Grid:
    table = Grid("outputs", ["output", "where"], left=2)
    table.add_row("recipe", str(root / "config.yaml"))
    for row in results["rows"]:
        table.add_row(f"{row['name']}: eval", row["greedy_dir"] + (f", {row['sampled_dir']}" if "sampled_dir" in row else ""))
    for r in results["rounds"]:
        table.add_row(f"round {r['round']}: search run", r["search_dir"])
        table.add_row(f"round {r['round']}: data", r["data_dir"])
        table.add_row(f"round {r['round']}: model", r["model_dir"])
    table.add_row("results", f"{root / 'results.json'}, {root / 'results.md'}")
    return table
