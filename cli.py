"""mcts-cot command line: search → export-pairs → train → eval.

Thin by design: each command parses its options, loads its config (defaults ← --config YAML ← dedicated
flags ← --set overrides), calls one library function and prints. A `UserError` becomes one line on stderr
and exit status 2.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mcts_cot.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build MCTS reasoning-tree data from verified answers, and train on it.")
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: --set a.b=value (repeatable).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model alias (smollm2-135m), HF id or local folder.")]
ProblemsOpt = Annotated[str | None, typer.Option("--problems", "-p", help="builtin:arithmetic[:N], or a .jsonl/.json/.parquet file or datasets folder.")]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="vllm, hf or scripted.")]


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit 2; everything else keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@user_errors
def search(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    problems: ProblemsOpt = None,
    backend: BackendOpt = None,
    shard: Annotated[str | None, typer.Option(help="i/N: search every N-th problem from the i-th (0-based) into trees-i-of-N.jsonl.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start the run dir again even if it holds another config.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Run the whole engine on the scripted backend, into --out if given, else into a temp dir removed at the end.")] = False,
) -> None:
    """Grow one verified MCTS tree per problem into a run dir (resumable; shardable)."""
    from mcts_cot.config import load_config
    from mcts_cot.inspect_run import draw, find_tree, summary_table
    from mcts_cot.run import run_search
    from mcts_cot.search import SearchConfig
    from mcts_cot.store import parse_shard

    cfg = load_config(SearchConfig, config, set_, **{"out": str(out) if out else None, "model.name": model,
                                                      "problems.source": problems, "backend.name": backend})
    with _dry_run_dir(cfg, dry_run and out is None) as where:
        manifest = run_search(cfg, shard=parse_shard(shard), overwrite=overwrite, dry_run=dry_run, console=console)
        console.print(summary_table(cfg.out))
        if dry_run:
            console.print(draw(find_tree(cfg.out, None)))
        console.print(f"{manifest['status']}: trees in {where}")


@contextlib.contextmanager
def _dry_run_dir(cfg, temporary: bool):
    """A dry run without --out goes to a temp dir that is removed afterwards; yields where the trees are."""
    if not temporary:
        yield cfg.out
        return
    with tempfile.TemporaryDirectory(prefix="mcts-cot-dry-") as tmp:
        cfg.out = tmp
        yield "a temp dir that is removed now (give --out to keep them)"


@app.command()
@user_errors
def inspect(
    run_dir: Annotated[Path, typer.Argument(help="A search run dir.")],
    problem: Annotated[str | None, typer.Option(help="Problem id to draw (default: the first tree).")] = None,
    max_nodes: Annotated[int, typer.Option(help="Draw at most this many nodes (0 = all); `mcts-cot view` shows every tree in a browser.")] = 400,
) -> None:
    """Print a search run's summary and draw one tree (N, Q and verdict per node)."""
    from mcts_cot.inspect_run import inspect_run

    inspect_run(run_dir, problem, Console(), max_nodes=max_nodes)


@app.command()
@user_errors
def view(
    run_dir: Annotated[Path, typer.Argument(help="A search run dir.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write (default RUN_DIR/view.html).")] = None,
    export: Annotated[Path | None, typer.Option("--export", "-e", help="A data dir of export-pairs: mark the nodes in SFT rows and pairs.")] = None,
) -> None:
    """Write one self-contained HTML page (no server, no network) to browse a run's trees: problems, verdicts,
    N and Q, path texts, filters, and which nodes became SFT rows and pairs."""
    from mcts_cot.view import write_view

    path = write_view(run_dir, out, export)
    console.print(f"view of {run_dir} in {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")


@app.command("export-pairs")
@user_errors
def export_pairs(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more search run dirs (a problem in several is read from the first).")],
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Print what each rule keeps and drops; write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the data of an earlier export in --out.")] = False,
) -> None:
    """Cut length-balanced SFT paths and preference pairs (path / step / length) from search trees."""
    from rich.progress import Progress

    from mcts_cot.config import load_config
    from mcts_cot.export import OUTPUTS, ExportConfig, build, summary_table, write
    from mcts_cot.io import claim_out_dir

    if out is None and not dry_run:
        raise UserError("export-pairs: give --out DATA_DIR (or --dry-run to only print the report)")
    if not dry_run:
        claim_out_dir(out, OUTPUTS, overwrite, "export-pairs")  # before the build, which may take minutes
    cfg = load_config(ExportConfig, config, set_)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("problems", total=None)
        result = build(cfg, run_dirs, lambda done, total: progress.update(task, completed=done, total=total))
    console.print(summary_table(result))
    if not dry_run:
        write(result, cfg, out, overwrite=overwrite)
        console.print(f"data in {out}")


@app.command()
@user_errors
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Model dir to write (HF folder + config.yaml + metrics.json).")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Data dir written by export-pairs (not used by objective grpo).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to train (default: the data's `model` column).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the model of an earlier run in --out (resume=true continues it instead).")] = False,
) -> None:
    """Train (cDPO / DPO / SimPO, + α·NLL, or SFT) on exported pairs, or GRPO on problems with verified rewards
    (configs/train/grpo.yaml); writes a model folder eval and search load."""
    from mcts_cot.config import load_config
    from trainers.config import TrainConfig
    from trainers.trainer import run

    cfg = load_config(TrainConfig, config, set_, **{"data": str(data) if data else None, "model.name": model})
    result = run(cfg, out, overwrite=overwrite)
    ev = result.metrics["eval"]
    extra = f", eval loss {ev['eval_loss']:.4f}" if "eval_loss" in ev else ""
    console.print(f"{result.metrics['objective']}: {result.metrics['global_step']} steps, "
                  f"{result.metrics['pairs_per_second']} rows/s{extra}; model in {out}")


@app.command("eval")
@user_errors
def eval_(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    problems: ProblemsOpt = None,
    backend: BackendOpt = None,
    n: Annotated[int | None, typer.Option("--n", "-n", help="Samples per problem (sampling.n).")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t", help="Sampling temperature; 0 = greedy (sampling.temperature).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the report of an earlier eval in --out.")] = False,
) -> None:
    """Sample answers for a problem set, verify them, and report accuracy, pass@k, maj@k and reflection markers.

    --model takes an alias (smollm2-135m), an HF id, or any HF model folder (e.g. one written by `train`).
    Writes samples.jsonl, summary.json, config.yaml and manifest.json to --out (default runs/eval).
    """
    from mcts_cot.config import load_config
    from mcts_cot.evaluate import EvalConfig, run_eval, summary_table

    cfg = load_config(EvalConfig, config, set_, **{
        "out": str(out) if out else None, "model.name": model, "problems.source": problems,
        "backend.name": backend, "sampling.n": n, "sampling.temperature": temperature})
    summary = run_eval(cfg, cfg.out, console=console, overwrite=overwrite)
    console.print(summary_table(summary, cfg.out))


@app.command("config")
@user_errors
def show_config(
    command: Annotated[str, typer.Argument(help="search, export-pairs, train or eval.")],
) -> None:
    """List every config key of a command with its default and what it does."""
    from rich.table import Table

    from mcts_cot.config import describe

    table = Table("key", "default", "meaning", title=f"mcts-cot {command} config (set with --set key=value)")
    for key, default, text in describe(_config_class(command)):
        table.add_row(key, default, text)
    Console().print(table)


def _config_class(command: str) -> type:
    if command == "search":
        from mcts_cot.search import SearchConfig

        return SearchConfig
    if command == "export-pairs":
        from mcts_cot.export import ExportConfig

        return ExportConfig
    if command == "train":
        from trainers.config import TrainConfig

        return TrainConfig
    if command == "eval":
        from mcts_cot.evaluate import EvalConfig

        return EvalConfig
    raise UserError(f"unknown command {command!r}: choose search, export-pairs, train or eval")


# ------------------------------------------------------------------------------------- the loop (mcts_cot.loop)

RoundsOpt = Annotated[int | None, typer.Option("--rounds", "-r", help="Rounds; round k searches with the model trained in round k-1.")]
ScaleOpt = Annotated[float | None, typer.Option("--scale", help="Multiply the recipe's problem counts (train, test, sampled test).")]


def _loop(config, set_, out, rounds, scale, backend) -> None:
    from mcts_cot.loop import load_loop_config, print_loop_end, run_loop

    cfg = load_loop_config(config, set_, **{"out": str(out) if out else None, "rounds": rounds, "scale": scale,
                                            "backend": backend})
    results = run_loop(cfg, console=console)
    print_loop_end(results, Path(cfg.out))


@app.command()
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
    _loop(config, set_, out, rounds, scale, backend)


@app.command()
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
    _loop(None, set_, out, rounds, scale, backend)


@app.command()
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


@app.command("best-of-n")
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


@app.command("compare-bon")
@user_errors
def compare_bon(
    run_dir: Annotated[Path, typer.Argument(help="An MCTS search run dir.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dir (bon-run, data-*, model-*, eval-*, results.*).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    train_models: Annotated[bool, typer.Option(help="Also train and evaluate a model on each one's data.")] = True,
) -> None:
    """MCTS vs best-of-N at the same generated tokens on the run's problems: solve rates, and the greedy
    test accuracy of a model trained on each one's data (same export, same trainer)."""
    from mcts_cot.loop import CompareConfig, load_loop_config, run_compare

    cfg = load_loop_config(config, set_, cls=CompareConfig, train_models=train_models)
    run_compare(run_dir, out, cfg, console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
