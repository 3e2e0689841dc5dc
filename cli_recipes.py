"""The workflow commands (loop, demo, ladder, best-of-n, compare-bon, checkpoints, dto-recipe): each loads a
recipe and calls one function of mcts_cot.loop or mcts_cot.checkpoints. cli.py registers them under the names in
COMMANDS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli_options import (
    BackendOpt,
    ConfigOpt,
    ModelOpt,
    OutOpt,
    ProblemsOpt,
    RoundsOpt,
    ScaleOpt,
    SetOpt,
    console,
    summary_line,
    user_errors,
)


def _loop(command: str, config, set_, out, rounds, scale, backend) -> None:
    from mcts_cot.loop import load_loop_config, run_loop

    cfg = load_loop_config(config, set_, **{"out": str(out) if out else None, "rounds": rounds, "scale": scale,
                                            "backend": backend})
    run_loop(cfg, console=console)
    summary_line(command, out=str(cfg.out), results=str(Path(cfg.out) / "results.json"))


@user_errors
def loop(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    rounds: RoundsOpt = None,
    scale: ScaleOpt = None,
    backend: BackendOpt = None,
) -> None:
    """Search → export → train → eval for one or more rounds, from a recipe (configs/recipes/*.yaml).

    --set takes recipe keys (rounds=2, train_problems=80) and stage keys (search.budget.max_rollouts=32,
    train.learning_rate=1e-5, eval.sampling.max_tokens=256). Ends with a before/after table.
    """
    _loop("loop", config, set_, out, rounds, scale, backend)


@user_errors
def demo(
    scale: ScaleOpt = None,
    rounds: RoundsOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    backend: BackendOpt = None,
) -> None:
    """The demo recipe (configs/recipes/demo.yaml = the built-in defaults): base model → MCTS on train
    problems → joint cDPO+α·NLL+masking → before/after table on held-out test problems (< 20 min, 2 CPU cores)."""
    _loop("demo", None, set_, out, rounds, scale, backend)


@user_errors
def ladder(
    run_dir: Annotated[Path, typer.Argument(help="A search run dir (the data of every row).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dir (data-*, one dir per row, results.*).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    backend: BackendOpt = None,
) -> None:
    """Marco-o1's Table 5 ablation ladder (SFT, + DPO, + Data Balance, + cDPO, + Joint Loss, + Masking)
    trained on one search run; prints accuracy and no-answer rate per row (configs/recipes/ladder.yaml)."""
    from mcts_cot.loop import LadderConfig, load_loop_config, run_ladder

    cfg = load_loop_config(config, set_, cls=LadderConfig, backend=backend)
    run_ladder(run_dir, out, cfg, console=console)


@user_errors
def best_of_n(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    problems: ProblemsOpt = None,
    backend: BackendOpt = None,
    n: Annotated[int | None, typer.Option("--n", "-n", help="Samples per problem.")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", help="Sample until this many generated tokens (shared equally by the problems) instead of a fixed n.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start the run dir again even if it holds another config.")] = False,
) -> None:
    """N full samples per problem, verified, written as a run dir of one-level trees (export-pairs reads it):
    `search` with strategy best_of_n."""
    from mcts_cot.config import load_config
    from mcts_cot.loop import BestOfNConfig, sample_best_of_n

    cfg = load_config(BestOfNConfig, config, set_, **{"out": str(out) if out else None, "model.name": model,
                                                      "problems.source": problems, "backend.name": backend,
                                                      "n": n, "max_total_tokens": tokens})
    manifest = sample_best_of_n(cfg, console=console, overwrite=overwrite)
    p = manifest["problems"]
    console.print(f"{p['solved_now']}/{p['total']} problems solved with {manifest['generated_tokens']} tokens; trees in {cfg.out}")


@user_errors
def compare_bon(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dir (one folder per set and arm, training/, results.*, yield.png).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    backend: BackendOpt = None,
) -> None:
    """Tree search (MCTS; fork where `arms` lists it) vs best-of-N (allocated and plain) at equal generated
    tokens on each problem set: yield (distinct correct responses capped at K), problems solved and pairs at
    several budgets, with intervals and a plot; optionally (train_models=true) models trained on each arm's
    data, evaluated greedily, paired."""
    from mcts_cot.loop import CompareConfig, load_loop_config, run_compare

    cfg = load_loop_config(config, set_, cls=CompareConfig, backend=backend)
    run_compare(out, cfg, console=console)
    summary_line("compare-bon", out=str(out), results=str(out / "results.json"))


@user_errors
def checkpoints(
    trajectories: Annotated[str | None, typer.Argument(help="An eval dir (samples.jsonl), a search run dir, or a JSONL of responses.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    method: Annotated[str | None, typer.Option(help="branch (Checkpoint DPO continuations) or dto (early-exit truncation).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start the run dir again even if it holds another config.")] = False,
) -> None:
    """Branch existing trajectories at their checkpoints (method branch) or cut correct ones at their DTO exit
    point (method dto) into a run dir that export-pairs reads (strategies checkpoint / dto)."""
    from mcts_cot.checkpoints.config import CheckpointConfig
    from mcts_cot.checkpoints.driver import run_checkpoints
    from mcts_cot.config import load_config

    cfg = load_config(CheckpointConfig, config, set_, **{"trajectories.source": trajectories, "out": str(out) if out else None,
                                                          "model.name": model, "backend.name": backend, "method": method})
    manifest = run_checkpoints(cfg, overwrite=overwrite, console=console)
    console.print(f"{manifest['problems_now']} problems, {manifest['trajectories']} trajectories "
                  f"{manifest['trajectory_verdicts']}, {manifest['generated_tokens']} tokens generated; trees in {cfg.out}")


@user_errors
def dto_recipe(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, backend: BackendOpt = None) -> None:
    """DTO end to end (configs/recipes/dto.yaml): sample → truncate → export → SimPO → greedy eval vs base."""
    from mcts_cot.checkpoints.recipe import load_recipe, run_dto_recipe

    cfg = load_recipe(config, set_, out=str(out) if out else None, backend=backend)
    run_dto_recipe(cfg, console=console)


COMMANDS = {
    "loop": loop,
    "demo": demo,
    "ladder": ladder,
    "best-of-n": best_of_n,
    "compare-bon": compare_bon,
    "checkpoints": checkpoints,
    "dto-recipe": dto_recipe,
}
