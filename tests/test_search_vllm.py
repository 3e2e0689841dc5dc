"""Integration: `mcts-cot search` with the embedded model through vLLM on a few built-in problems."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app
from mcts_cot.store import iter_trees

pytestmark = pytest.mark.slow


def test_search_with_the_embedded_model_on_vllm(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", "--model", "smollm2-135m", "--backend", "vllm", "--problems", "builtin:arithmetic:3",
        "--out", str(out), "--set", "budget.max_rollouts=6", "--set", "policy.children=3",
        "--set", "policy.max_path_tokens=256", "--set", "backend.cpu_kv_cache_gib=1",
    ])
    assert result.exit_code == 0, result.output
    trees = list(iter_trees(out))
    assert len(trees) == 3
    for tree in trees:
        assert tree.status in ("success", "failure") and tree.reason
        assert tree.stats["rollouts"] >= 1 and len(tree.nodes) > 1
        # Token ids are the state: the path ids decode back to the path text the model wrote.
        leaf = tree.leaves()[0]
        assert tree.path_ids(leaf) == [t for n in tree.path(leaf) for t in n.token_ids]
        assert tree.root.N == sum(c.N for c in tree.children(tree.root))
    manifest = (out / "manifest.json").read_text()
    assert '"prefix_cache_hit_rate"' in manifest and '"complete"' in manifest
