"""`mcts-cot inspect`: a run's summary and one tree drawn in the terminal (step text abbreviated, N, Q and
verdict per node), for checking what a search actually grew."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.tree import Tree as RichTree

from mcts_cot.errors import UserError
from mcts_cot.run import summarize
from mcts_cot.store import iter_trees
from mcts_cot.tree import Node, Tree

_STYLE = {"correct": "green", "wrong": "red", "no_answer": "yellow", "unverifiable": "magenta"}


def summary_table(run_dir: str | Path) -> Table:
    s = summarize(run_dir)
    table = Table(title=f"run {run_dir}", show_header=False)
    table.add_row("trees", str(s["trees"]))
    table.add_row("status", ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items())))
    table.add_row("solved (≥ 1 correct leaf)", f"{s['solved']} ({s['solve_rate']:.1%})")
    for key in ("rollouts", "correct", "wrong", "no_answer", "unverifiable", "answer_boxed", "answer_phrase", "nodes",
                "generated_tokens"):
        table.add_row(key, str(s[key]))
    return table


def find_tree(run_dir: str | Path, problem_id: str | None) -> Tree:
    for tree in iter_trees(run_dir):
        if problem_id is None or tree.problem["id"] == problem_id:
            return tree
    raise UserError(f"{run_dir}: no tree for problem {problem_id!r}" if problem_id else f"{run_dir}: no finished trees yet")


def draw(tree: Tree, width: int = 70, max_nodes: int = 400, run_dir: str | Path | None = None) -> RichTree:
    """A rich tree of the search tree; text abbreviated to `width` characters per node. Past `max_nodes`
    (0 = no limit) the drawing ends with how many nodes it left out and the commands that show them all."""
    p = tree.problem
    root = RichTree(f"[bold]{p['id']}[/] gold={p['answer']} · {tree.status}: {tree.reason} · N={tree.root.N} Q={tree.root.Q:.2f}")
    stack = [(tree.root, root)]
    shown = 0
    while stack and (shown < max_nodes or not max_nodes):
        node, branch = stack.pop()
        kids = [(child, branch.add(_label(child, width))) for child in tree.children(node)]
        shown += len(kids)
        stack.extend(reversed(kids))
    left_out = len(tree.nodes) - 1 - shown
    if left_out:
        run = run_dir or "RUN_DIR"
        root.add(f"[bold yellow]… {left_out} of {len(tree.nodes) - 1} nodes not drawn (limit {max_nodes}); all of them: "
                 f"mcts-cot inspect {run} --problem {p['id']} --max-nodes 0, or in a browser: mcts-cot view {run}[/]")
    return root


def _label(node: Node, width: int) -> str:
    text = " ".join(node.text.split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    text = text.replace("[", r"\[")
    mark = ""
    if node.terminal:
        mark = f" [{_STYLE.get(node.verdict or '', 'white')}]{node.verdict or node.terminal}" + (
            f" ({node.answer})" if node.answer is not None else "") + "[/]"
    return f"[dim]#{node.id} {node.kind} N={node.N} Q={node.Q:.2f}[/] {text}{mark}"


def inspect_run(run_dir: str | Path, problem_id: str | None, console: Console, max_nodes: int = 400) -> None:
    console.print(summary_table(run_dir))
    console.print(draw(find_tree(run_dir, problem_id), max_nodes=max_nodes, run_dir=run_dir))
