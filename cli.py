"""mcts-cot command line: search → export-pairs → train → eval.

Thin by design: each command parses its options, loads its config (defaults ← --config YAML ← dedicated
flags ← --set overrides), calls one library function and prints. A `UserError` becomes one line on stderr
and exit status 2. Humans read stderr; stdout gets one JSON line per finished command, for scripts.
The data commands live here; the workflow commands (loop, demo, compare-bon, ...) in cli_recipes.py, and what
both share (options, console, the summary line, the error line) in cli_options.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli_options import (
    BackendOpt,
    ConfigOpt,
    ModelOpt,
    OutOpt,
    ProblemsOpt,
    RayOpt,
    SetOpt,
    console,
    summary_line,
    user_errors,
)
from cli_recipes import COMMANDS
from mcts_cot.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build MCTS reasoning-tree data from verified answers, and train on it.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"mcts-cot {version('mcts-cot')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Silence mcts-cot's own console (progress, tables, results); errors still print, and the JSON summary line goes to stdout.")] = False,
    progress_every: Annotated[float, typer.Option(envvar="MCTS_COT_PROGRESS_EVERY", help="Seconds between plain progress lines when stderr is not a terminal (a log file).")] = 30.0,
    vllm_logs: Annotated[bool, typer.Option(help="Show vLLM's own INFO and WARNING lines (by default it logs errors only).")] = False,
) -> None:
    """Options for every command; put them before the command: mcts-cot --quiet search ..."""
    console.quiet = quiet
    os.environ["MCTS_COT_PROGRESS_EVERY"] = str(progress_every)
    if vllm_logs:
        os.environ["VLLM_LOGGING_LEVEL"] = "INFO"


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
    ray: RayOpt = None,
) -> None:
    """Grow one verified MCTS tree per problem into a run dir (resumable; shardable)."""
    from mcts_cot.config import load_config
    from mcts_cot.inspect_run import draw, find_tree, summary_table
    from mcts_cot.run import run_search
    from mcts_cot.search import SearchConfig
    from mcts_cot.store import parse_shard

    cfg = load_config(SearchConfig, config, set_, **{"out": str(out) if out else None, "model.name": model,
                                                      "problems.source": problems, "backend.name": backend,
                                                      "ray.address": ray})
    with _dry_run_dir(cfg, dry_run and out is None) as where:
        manifest = run_search(cfg, shard=parse_shard(shard), overwrite=overwrite, dry_run=dry_run, console=console)
        console.print(summary_table(cfg.out))
        if dry_run:
            console.print(draw(find_tree(cfg.out, None)))
        console.print(f"{manifest['status']}: trees in {where}")
        summary_line("search", status=manifest["status"], out=str(cfg.out), problems=manifest.get("problems"))


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
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Data dir to write (needed unless --dry-run).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Print what each rule keeps and drops; write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the data of an earlier export in --out.")] = False,
) -> None:
    """Cut length-balanced SFT paths and preference pairs (path / step / length) from search trees."""
    from mcts_cot.config import load_config
    from mcts_cot.export import OUTPUTS, ExportConfig, build, summary_table, write
    from mcts_cot.io import claim_out_dir
    from mcts_cot.progress import progress_bar

    if out is None and not dry_run:
        raise UserError("export-pairs: give --out DATA_DIR (or --dry-run to only print the report)")
    if not dry_run:
        claim_out_dir(out, OUTPUTS, overwrite, "export-pairs")  # before the build, which may take minutes
    cfg = load_config(ExportConfig, config, set_)
    with progress_bar(console, transient=True) as progress:
        task = progress.add_task("problems", total=None, info="")
        result = build(cfg, run_dirs, lambda done, total: progress.update(task, completed=done, total=total))
    console.print(summary_table(result))
    if not dry_run:
        write(result, cfg, out, overwrite=overwrite)
        console.print(f"data in {out}; load_dataset(\"{out}\", \"pairs\") reads it (docs/DATA.md)")
    summary_line("export-pairs", out=str(out) if out and not dry_run else None, rows=result.report["rows"],
                 problems=result.report["problems"]["total"])


@app.command()
@user_errors
def push(
    data_dir: Annotated[Path, typer.Argument(help="A data dir written by export-pairs (with its README.md card).")],
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repo, user/name (created if missing).")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the files that would be uploaded; upload nothing.")] = False,
) -> None:
    """Upload a data dir to the Hugging Face Hub as a dataset: the card, its parquet configs and the JSONL files
    (token: `hf auth login` or HF_TOKEN). load_dataset(REPO_ID, "pairs") then reads it."""
    from mcts_cot.hub import push as push_dir
    from mcts_cot.hub import upload_files

    if dry_run:
        files = upload_files(data_dir)
    else:
        from huggingface_hub import HfApi

        files = push_dir(data_dir, repo_id, HfApi(), private=private)
    for name in files:
        console.print(name, highlight=False)
    console.print(f"{len(files)} files {'would go' if dry_run else 'went'} to https://huggingface.co/datasets/{repo_id}")
    summary_line("push", repo_id=repo_id, files=files, dry_run=dry_run)


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
    summary_line("train", out=str(out), objective=result.metrics["objective"], steps=result.metrics["global_step"],
                 eval_loss=ev.get("eval_loss"))


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
    ray: RayOpt = None,
) -> None:
    """Sample answers for a problem set, verify them, and report accuracy, pass@k, maj@k and reflection markers.

    --model takes an alias (smollm2-135m), an HF id, or any HF model folder (e.g. one written by `train`).
    Writes samples.jsonl, summary.json, config.yaml and manifest.json to --out (default runs/eval).
    """
    from mcts_cot.config import load_config
    from mcts_cot.evaluate import EvalConfig, run_eval, summary_table

    cfg = load_config(EvalConfig, config, set_, **{
        "out": str(out) if out else None, "model.name": model, "problems.source": problems,
        "backend.name": backend, "sampling.n": n, "sampling.temperature": temperature, "ray.address": ray})
    summary = run_eval(cfg, cfg.out, console=console, overwrite=overwrite)
    console.print(summary_table(summary, cfg.out))
    summary_line("eval", out=str(cfg.out), accuracy=summary["accuracy"], problems=summary["problem_count"])


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


for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def bare_ray(args: list[str]) -> list[str]:
    """`--ray` with no address after it means `--ray local` (typer has no option with an optional value)."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("local")
    return out


def main() -> None:
    app(args=bare_ray(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
