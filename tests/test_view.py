"""`mcts-cot view` and `inspect`: the page's data and export marks, the page itself in headless Chromium
(click a problem and a node, read the path text, apply a filter), and `inspect` saying what it left out."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from mcts_cot.backends.scripted import ScriptedBackend
from mcts_cot.config import load_config, save_config
from mcts_cot.errors import UserError
from mcts_cot.export import ExportConfig, build, write
from mcts_cot.inspect_run import draw
from mcts_cot.problems import load_problems
from mcts_cot.search import Engine, SearchConfig, run_waves
from mcts_cot.store import RunDir, iter_trees
from mcts_cot.view import build_page, find_node, write_view

BROWSER_HINT = "headless Chromium not found: install it (Debian/Ubuntu: apt-get install -y chromium), or run `make test`"


class ExactVerifier:
    """Correct when the answer equals the gold string (no worker pool needed for a scripted run)."""

    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a == g else "wrong" for g, a in items]


def scripted_run(out: Path, byte_tok, problems: int = 6, *sets: str) -> Path:
    """A run dir grown by the scripted backend's default script (random steps, some boxed answers)."""
    cfg = load_config(SearchConfig, None, ["backend.name=scripted", "prompt.few_shot=[]", "prompt.system=''",
                                           "model.name=byte", f"problems.source=builtin:arithmetic:{problems}",
                                           "policy.children=3", "budget.max_rollouts=32", *sets], out=str(out))
    engine = Engine(cfg, {"main": ScriptedBackend(byte_tok)}, ExactVerifier(), byte_tok)
    run = RunDir(out, "test")
    save_config(cfg, out)
    run_waves(engine, load_problems(cfg.problems)[0], run.append)
    return out


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory, byte_tok):
    root = tmp_path_factory.mktemp("view")
    run = scripted_run(root / "run", byte_tok)
    cfg = load_config(ExportConfig, None, ["strategies=[path, step]", "step.min_visits=1", "step.margin=0.1", "val_fraction=0.3"])
    write(build(cfg, [run]), cfg, root / "data")
    return run, root / "data"


def _blocks(page: str) -> dict[str, dict]:
    """The embedded tree blocks, by the problem id of the same index in the problem table."""
    problems = orjson.loads(html.unescape(re.search(r"const PROBLEMS = (.*);", page).group(1)))
    trees = re.findall(r'<script type="application/json" id="tree-(\d+)">(.*?)</script>', page)
    return {problems[int(i)]["id"]: orjson.loads(body) for i, body in trees}


# --------------------------------------------------------------------------------------------- the data


def test_page_embeds_every_node_and_maps_every_export_row_to_its_nodes(run_and_export):
    run, data = run_and_export
    blocks = _blocks(build_page(run, data))
    trees = {t.problem["id"]: t for t in iter_trees(run)}
    assert set(blocks) == set(trees)
    for pid, tree in trees.items():
        assert blocks[pid]["nodes"]["N"] == [n.N for n in tree.nodes]
        assert blocks[pid]["nodes"]["text"] == [n.text for n in tree.nodes]
    sft = [orjson.loads(line) for name in ("sft.jsonl", "sft_val.jsonl") for line in (data / name).read_bytes().splitlines()]
    pairs = [orjson.loads(line) for name in ("pairs.jsonl", "pairs_val.jsonl") for line in (data / name).read_bytes().splitlines()]
    assert sft and pairs and {p["strategy"] for p in pairs} == {"path", "step"}
    for pid, block in blocks.items():
        tree = trees[pid]
        assert sorted(tree.path_ids(tree.nodes[i]) for i in block["sft"]) == sorted(
            r["completion_ids"] for r in sft if r["problem_id"] == pid)
    marked = [(pid, *p) for pid, b in blocks.items() for p in b["pairs"]]
    assert len(marked) == len(pairs)
    for pid, strategy, chosen, rejected, split in marked:
        tree = trees[pid]
        assert strategy in ("path", "step") and split in ("train", "validation")
        c, r = tree.path_ids(tree.nodes[chosen]), tree.path_ids(tree.nodes[rejected])
        assert any(p["problem_id"] == pid and p["prefix_ids"] + p["chosen_ids"] == c
                   and p["prefix_ids"] + p["rejected_ids"] == r for p in pairs)


def test_find_node_walks_token_ids_and_rejects_partial_steps(run_and_export):
    tree = max(iter_trees(run_and_export[0]), key=lambda t: len(t.nodes))
    deep = max(tree.nodes, key=lambda n: n.depth)
    assert find_node(tree, tree.path_ids(deep)) is deep
    assert find_node(tree, tree.path_ids(deep)[:-1]) is None
    assert find_node(tree, []) is None


def test_an_export_of_another_run_is_counted_as_unmatched(run_and_export, tmp_path, byte_tok):
    other = scripted_run(tmp_path / "other", byte_tok, 3, "problems.seed=7")
    page = build_page(other, run_and_export[1])
    meta = orjson.loads(re.search(r"const META = (.*);", page).group(1))
    assert meta["export_rows"]["rows"] > 0 and meta["export_rows"]["unmatched"] == meta["export_rows"]["rows"]


def test_user_mistakes_are_one_line_errors_naming_the_path(run_and_export, tmp_path):
    run, data = run_and_export
    with pytest.raises(UserError, match="not found"):
        build_page(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no finished trees"):
        build_page(tmp_path / "empty")
    with pytest.raises(UserError, match=r"no sft.jsonl or pairs.jsonl"):
        build_page(run, tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pairs.jsonl").write_text('{"problem_id": "x"}\n')
    with pytest.raises(UserError, match=r"pairs.jsonl: row 1: lacks prefix_ids"):
        build_page(run, tmp_path / "bad")


def test_cli_view_writes_one_self_contained_file(run_and_export, tmp_path):
    run, data = run_and_export
    out = tmp_path / "v.html"
    result = CliRunner().invoke(app, ["view", str(run), "--export", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "v.html" in result.output
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything"
    result = CliRunner().invoke(app, ["view", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "run dir not found" in result.output


# --------------------------------------------------------------------------------------------- inspect


def test_inspect_says_how_many_nodes_it_left_out_and_how_to_see_them(run_and_export):
    run = run_and_export[0]
    tree = max(iter_trees(run), key=lambda t: len(t.nodes))
    console = Console(record=True, width=1000)
    console.print(draw(tree, max_nodes=5, run_dir=run))
    text = console.export_text()
    drawn = len(re.findall(r"#\d+ ", text))
    assert f"{len(tree.nodes) - 1 - drawn} of {len(tree.nodes) - 1} nodes not drawn" in text
    assert f"mcts-cot view {run}" in text and "--max-nodes" in text
    console = Console(record=True, width=1000)
    console.print(draw(tree, max_nodes=0))
    text = console.export_text()
    assert len(re.findall(r"#\d+ ", text)) == len(tree.nodes) - 1 and "not drawn" not in text


# --------------------------------------------------------------------------------------------- the browser


def chromium() -> str:
    """The headless browser; missing is a failure with what to install, never a skip."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail(BROWSER_HINT, pytrace=False)


def dump_dom(page: Path, query: str = "") -> str:
    """The DOM after load and after the actions the query string replays as DOM events."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=5000", "--dump-dom", f"{page.resolve().as_uri()}?{query}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def _drawn(dom: str) -> list[int]:
    svg = re.search(r'<svg id="tree".*?</svg>', dom, re.S).group(0)
    return [int(i) for i in re.findall(r'<g class="node[^"]*" data-id="(\d+)"', svg)]


def test_browser_click_problem_and_node_shows_path_then_filter_hides_wrong_ends(run_and_export):
    run, data = run_and_export
    trees = sorted(iter_trees(run), key=lambda t: t.problem["id"])
    tree = next(t for t in trees[1:] if any(n.verdict == "wrong" for n in t.nodes)
                and any(n.verdict == "correct" for n in t.nodes))
    page = write_view(run, export_dir=data)
    dom = dump_dom(page)
    assert sorted(_drawn(dom)) == list(range(len(trees[0].nodes))), "the first tree is drawn on load"
    assert re.search(r'data-first-draw-ms="[\d.]+"', dom)

    deep = max((n for n in tree.nodes if n.verdict == "wrong"), key=lambda n: n.depth)
    dom = dump_dom(page, f"problem={tree.problem['id']}&node={deep.id}")
    assert re.search(rf'<tr data-idx="\d+" data-id="{tree.problem["id"]}" class="active"', dom)
    assert sorted(_drawn(dom)) == list(range(len(tree.nodes)))
    assert f"node #{deep.id} · " in dom and re.search(rf'class="node v-wrong[^"]* sel" data-id="{deep.id}"', dom)
    path_text = re.search(r'<div id="path-text">(.*?)</div>', dom, re.S).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", path_text)) == "".join(n.text for n in tree.path(deep))
    assert f"path: {len(tree.path_ids(deep))} tokens in {deep.depth} steps" in dom

    dom = dump_dom(page, f"problem={tree.problem['id']}&node={deep.id}&filter=correct")
    shown = set(_drawn(dom))
    keep = {a.id for n in tree.nodes if n.verdict == "correct" for a in [*tree.path(n), tree.root]}
    assert shown == keep and deep.id not in shown
    assert not re.search(r'class="node v-(wrong|no_answer)', dom)


def test_browser_collapse_sort_and_search(run_and_export):
    run, _ = run_and_export
    trees = sorted(iter_trees(run), key=lambda t: t.problem["id"])
    page = write_view(run, run / "view-test.html")
    tree = trees[0]
    inner = next(n for n in tree.nodes[1:] if n.children)
    below = {n.id for n in tree.nodes if inner.id in {a.id for a in tree.path(n)[:-1]}}
    dom = dump_dom(page, f"toggle={inner.id}")
    assert set(_drawn(dom)) == set(range(len(tree.nodes))) - below
    assert re.search(rf'data-tog="{inner.id}"[^>]*>\+{len(inner.children)}<', dom)
    most = max(trees, key=lambda t: t.stats["nodes"])
    dom = dump_dom(page, "sort=-nodes")
    assert re.search(r'<tbody><tr data-idx="\d+" data-id="([^"]+)"', dom).group(1) == most.problem["id"]
    dom = dump_dom(page, f"search={trees[-1].problem['id']}")
    assert re.findall(r'<tr data-idx="\d+" data-id="([^"]+)"', dom) == [trees[-1].problem["id"]]


def test_browser_marks_sft_ends_and_draws_a_clicked_pair_in_two_colours(run_and_export):
    run, data = run_and_export
    page = write_view(run, run / "view-marks.html", data)
    blocks = _blocks(page.read_text())
    trees = {t.problem["id"]: t for t in iter_trees(run)}
    pid = next(p for p, b in blocks.items() if b["sft"] and b["pairs"])
    tree, (strategy, chosen, rejected, _) = trees[pid], blocks[pid]["pairs"][0]
    dom = dump_dom(page, f"problem={pid}&pair=0")
    assert {int(i) for i in re.findall(r'<g class="node[^"]* sft[^"]*" data-id="(\d+)"', dom)} == set(blocks[pid]["sft"])
    on = {side: {int(i) for i in re.findall(rf'<g class="node[^"]* on-{side}[^"]*" data-id="(\d+)"', dom)}
          for side in ("chosen", "rejected")}
    assert on["chosen"] == {0, *(n.id for n in tree.path(tree.nodes[chosen]))}
    assert on["rejected"] == {0, *(n.id for n in tree.path(tree.nodes[rejected]))}
    assert f"node #{chosen} · " in dom and f"chosen in pair 1 ({strategy}" in dom
