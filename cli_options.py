"""What every command of the CLI shares: the stderr console, the option types, the one JSON summary line on
stdout and the one-line error. Kept apart so cli.py (data commands) and cli_recipes.py (workflows) read alike."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mcts_cot.errors import UserError

console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: --set a.b=value (repeatable).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.", show_default="the config's out")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model alias (smollm2-135m), HF id or local folder.", show_default="the config's model.name: smollm2-135m")]
ProblemsOpt = Annotated[str | None, typer.Option("--problems", "-p", help="builtin:arithmetic[:N], or a .jsonl/.json/.parquet file or datasets folder.", show_default="the config's problems.source")]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="vllm, hf or scripted.", show_default="the config's backend.name: vllm")]
RayOpt = Annotated[str | None, typer.Option("--ray", help="Grow on engine actors of a Ray cluster, one per GPU (ray.address): `local` starts one on this machine (what a bare --ray means), `auto` joins the one `ray start` made, or a cluster address.", show_default="one process, no Ray")]
RoundsOpt = Annotated[int | None, typer.Option("--rounds", "-r", help="Rounds; round k searches with the model trained in round k-1.")]
ScaleOpt = Annotated[float | None, typer.Option("--scale", help="Multiply the recipe's problem counts (train, test, sampled test); add --set time_budget_s=null, or the time box still caps the search.")]


def summary_line(command: str, **fields) -> None:
    """The machine-readable result of a command: one JSON line on stdout (humans read stderr)."""
    print(json.dumps({"command": command, **fields}, default=str), flush=True)


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit 2; everything else keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # even when --quiet
            raise typer.Exit(2) from None

    return wrapper
