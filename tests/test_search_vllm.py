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


def test_vllm_requests_one_by_one_and_cancelled():
    """The request-level loop the continuous scheduler drives: a cancelled request never comes back, the
    others come back with their n completions."""
    from mcts_cot.backends.base import Request
    from mcts_cot.backends.vllm_backend import VLLMBackend
    from mcts_cot.config import BackendConfig, ModelConfig

    backend = VLLMBackend(ModelConfig(name="smollm2-135m"), BackendConfig(name="vllm", cpu_kv_cache_gib=1))
    try:
        prompt = backend.tokenizer.encode("Count: 1, 2, 3,", add_special_tokens=False)
        ids = [backend.submit(Request(prompt_ids=prompt, n=2, max_tokens=m, temperature=0.7)) for m in (8, 200, 16)]
        backend.cancel([ids[1]])
        got = {}
        while len(got) < 2:
            got.update(backend.poll())
        assert set(got) == {ids[0], ids[2]}
        assert [len(c) for c in got.values()] == [2, 2]
        assert all(0 < len(c.token_ids) <= 16 for comps in got.values() for c in comps)
        assert backend.poll() == []
    finally:
        backend.close()
