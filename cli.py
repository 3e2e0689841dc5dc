"""mcts-cot command line: search → export-pairs → train → eval.

Thin by design: each command parses its options, loads its config (defaults ← --config YAML ← dedicated
flags ← --set overrides), calls one library function and prints. A `UserError` becomes one line on stderr
and exit status 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from mcts_cot.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build MCTS reasoning-tree data from verified answers, and train on it.")
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")]  # noqa: UP045
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: --set a.b=value (repeatable).")]  # noqa: UP045
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.")]  # noqa: UP045
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model alias (smollm2-135m), HF id or local folder.")]  # noqa: UP045
ProblemsOpt = Annotated[Optional[str], typer.Option("--problems", "-p", help="builtin:arithmetic[:N], or a .jsonl/.json/.parquet file or datasets folder.")]  # noqa: UP045
BackendOpt = Annotated[Optional[str], typer.Option("--backend", "-b", help="vllm, hf or scripted.")]  # noqa: UP045


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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
