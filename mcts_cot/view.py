"""`mcts-cot view`: a search run as one self-contained HTML page (no server, no network, data embedded).

The page lists the problems (status, counts, tokens; sortable, searchable) and draws a chosen tree with
verdict colours, N and Q, collapsible subtrees, the full path text of a clicked node, end filters and, given
an export dir, the nodes that became SFT rows or pair ends. The problem table is one small JSON block; each
tree's node table is its own block, parsed only when the tree is opened, so a big run still opens at once.
Export rows carry token ids, not node ids, so they are mapped back by walking each tree along those ids.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from mcts_cot.errors import UserError
from mcts_cot.io import iter_jsonl, write_atomic
from mcts_cot.store import iter_trees
from mcts_cot.tree import Node, Tree

STAT_KEYS = ("rollouts", "correct", "wrong", "no_answer", "unverifiable", "nodes", "generated_tokens")
EXPORT_FILES = ("sft.jsonl", "sft_val.jsonl", "pairs.jsonl", "pairs_val.jsonl")


def node_table(tree: Tree) -> dict[str, list]:
    """The node fields the page shows, one column each (short keys keep a 2,000-node tree small)."""
    nodes = tree.nodes
    return {"parent": [n.parent for n in nodes], "kind": [n.kind for n in nodes], "text": [n.text for n in nodes],
            "ntok": [len(n.token_ids) for n in nodes], "terminal": [n.terminal for n in nodes],
            "answer": [n.answer for n in nodes], "verdict": [n.verdict for n in nodes],
            "N": [n.N for n in nodes], "Q": [round(n.Q, 4) for n in nodes]}


def summary_row(tree: Tree) -> dict[str, Any]:
    p = tree.problem
    return {"id": str(p["id"]), "problem": p.get("problem", ""), "answer": str(p.get("answer", "")),
            "status": tree.status, "reason": tree.reason,
            **{k: tree.stats.get(k, len(tree.nodes) if k == "nodes" else 0) for k in STAT_KEYS}}


# --------------------------------------------------------------------------------------------- export marks


def find_node(tree: Tree, ids: list[int]) -> Node | None:
    """The node whose root path holds exactly these token ids, found by walking down the tree."""
    node, at = tree.root, 0
    while at < len(ids):
        for child in tree.children(node):
            step = child.token_ids
            if step and ids[at:at + len(step)] == step:
                node, at = child, at + len(step)
                break
        else:
            return None
    return node if node.parent is not None else None


def export_marks(export_dir: str | Path, trees: dict[str, Tree]) -> tuple[dict[str, dict], dict[str, int]]:
    """Per problem id: the node ids of SFT rows and the (strategy, chosen, rejected, split) of each pair;
    and how many rows were read and how many matched no node of this run (an export of another run)."""
    export_dir = Path(export_dir)
    paths = [export_dir / name for name in EXPORT_FILES if (export_dir / name).is_file()]
    if not paths:
        raise UserError(f"{export_dir}: no sft.jsonl or pairs.jsonl; is this an `mcts-cot export-pairs` data dir?")
    marks: dict[str, dict] = {}
    counts = {"rows": 0, "unmatched": 0}
    for path in paths:
        for row_no, row in iter_jsonl(path):
            counts["rows"] += 1
            matched = _mark(row, trees, marks, path.name.startswith("sft"), f"{path}: row {row_no}")
            counts["unmatched"] += not matched
    return marks, counts


def _mark(row: dict, trees: dict[str, Tree], marks: dict[str, dict], is_sft: bool, where: str) -> bool:
    keys = ("problem_id", "completion_ids") if is_sft else ("problem_id", "prefix_ids", "chosen_ids", "rejected_ids")
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"{where}: lacks {', '.join(missing)}; not a row written by `mcts-cot export-pairs`")
    tree = trees.get(str(row["problem_id"]))
    if tree is None:
        return False
    mark = marks.setdefault(str(row["problem_id"]), {"sft": [], "pairs": []})
    if is_sft:
        end = find_node(tree, row["completion_ids"])
        if end is not None:
            mark["sft"].append(end.id)
        return end is not None
    chosen = find_node(tree, row["prefix_ids"] + row["chosen_ids"])
    rejected = find_node(tree, row["prefix_ids"] + row["rejected_ids"])
    if chosen is None or rejected is None:
        return False
    mark["pairs"].append([row.get("strategy", ""), chosen.id, rejected.id, row.get("split", "")])
    return True


# --------------------------------------------------------------------------------------------- the page


def _json(obj: Any) -> str:
    """JSON safe inside a <script> element: no `<` can close it early."""
    return orjson.dumps(obj).decode().replace("<", "\\u003c")


def build_page(run_dir: str | Path, export_dir: str | Path | None = None) -> str:
    """The whole HTML page of a run (and its export's marks)."""
    trees = {str(t.problem["id"]): t for t in iter_trees(run_dir)}
    if not trees:
        raise UserError(f"{run_dir}: no finished trees yet; run `mcts-cot search --out {run_dir}` first")
    marks, counts = export_marks(export_dir, trees) if export_dir else ({}, None)
    order = sorted(trees)
    rows = [{**summary_row(trees[pid]), "sft": len(marks.get(pid, {}).get("sft", [])),
             "pairs": len(marks.get(pid, {}).get("pairs", []))} for pid in order]
    meta = {"run": str(run_dir), "export": str(export_dir) if export_dir else None, "export_rows": counts}
    blocks = "\n".join(
        f'<script type="application/json" id="tree-{i}">'
        f'{_json({"nodes": node_table(trees[pid]), **marks.get(pid, {"sft": [], "pairs": []})})}</script>'
        for i, pid in enumerate(order))
    template = resources.files("mcts_cot").joinpath("view_template.html").read_text(encoding="utf-8")
    return (template.replace("/*__META__*/null", _json(meta)).replace("/*__PROBLEMS__*/[]", _json(rows))
            .replace("<!--__TREES__-->", blocks))


def write_view(run_dir: str | Path, out: str | Path | None = None, export_dir: str | Path | None = None) -> Path:
    """Write the page (default RUN_DIR/view.html) and return its path."""
    out = Path(out) if out else Path(run_dir) / "view.html"
    write_atomic(out, build_page(run_dir, export_dir))
    return out
