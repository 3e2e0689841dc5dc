"""What a workflow prints and writes at its end: the before / after table with each row's paired comparison
against the base, and results.json / results.md. Tables are `Grid`s (mcts_cot/tables.py): the same rows go to
the console and into the markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from mcts_cot.evaluate import INTERVAL_NOTE, UNSEEDED_NOTE, paired_comparison, with_interval
from mcts_cot.io import write_atomic, write_json
from mcts_cot.tables import Grid

VS_BASE = "vs base (+/−, p)"
VS_BASE_MEANS = ("the greedy accuracy difference to the first row in points with its 95% paired interval, then the "
                 "test problems this model solves and the first row misses (+) and the reverse (−), with the exact "
                 "McNemar p-value")


def _row_figures(row: dict) -> dict[str, Any]:
    """The table's figures; an accuracy is (rate, problems) so that it prints with its interval."""
    g = row["greedy"]
    s = row.get("sampled")
    k = s["k"] if s else None
    return {
        "greedy acc": (g["accuracy"], g["problem_count"]),
        f"pass@{k}" if k else "pass@k": (s[f"pass@{k}"], s["problem_count"]) if s else None,
        "sampled acc": (s["accuracy"], s["problem_count"]) if s else None,
        "no answer": g["no_answer_rate"], "mean tokens": g["mean_generated_tokens"],
        "reflection / resp": g["reflection_per_response"]["total"],
    }


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return with_interval(*value)
    if key == "mean tokens":
        return f"{value:.1f}"
    if key == "reflection / resp":
        return f"{value:.3f}"
    return f"{value:.1%}"


def before_after_table(rows: list[dict], title: str = "before / after") -> Grid:
    keys = list(_row_figures(rows[0]))
    table = Grid(title, ["model", *keys, VS_BASE])
    for row, vs in zip(rows, vs_base(rows), strict=True):
        figs = _row_figures(row)
        table.add_row(row["name"], *[_fmt(k, figs.get(k)) for k in keys], vs)
    table.caption = ("greedy accuracy, no answer, mean tokens, reflection markers: greedy eval; pass@k, sampled accuracy: "
                     f"sampled eval; {INTERVAL_NOTE}; {VS_BASE}: {VS_BASE_MEANS}")
    if any(not row.get("sampled", {}).get("seeded", True) for row in rows):
        table.caption += f"; {UNSEEDED_NOTE}"
    return table


def vs_base(rows: list[dict]) -> list[str]:
    """Each row's paired comparison with the first row (the base), from the two greedy evals."""
    cells = ["-"]
    for row in rows[1:]:
        c = paired_comparison(rows[0]["greedy_dir"], row["greedy_dir"])
        cells.append(f"{100 * c['difference']:+.1f} [{100 * c['difference_low']:+.1f}, {100 * c['difference_high']:+.1f}] pts: "
                     f"+{c['won']} −{c['lost']} (p {c['p_value']:.2f})")
    return cells


def write_results(root: Path, results: dict, table: Grid, console: Console, extra: Grid | None = None) -> None:
    """results.json, results.md (the table, the extra table, stage times) and the table on stdout."""
    write_json(root / "results.json", results)
    times = results.get("stage_seconds", {})
    lines = [f"# {table.title}\n\n", table.markdown(), f"\n{table.caption}\n\nwall time: {results.get('wall_seconds')} s\n"]
    if extra is not None:
        lines += [f"\n## {extra.title}\n\n", extra.markdown(), f"\n{extra.caption}\n" if extra.caption else ""]
    if times:
        lines += ["\n| stage | seconds |\n|---|---|\n"] + [f"| {k} | {v} |\n" for k, v in times.items()]
    write_atomic(root / "results.md", "".join(lines))
    if not console.quiet:  # the tables go to stdout; --quiet leaves it the summary line alone
        Console().print(table)
        if extra is not None:
            Console().print(extra)
    console.print(f"results in {root / 'results.json'} and {root / 'results.md'}; wall time {results.get('wall_seconds')} s")
