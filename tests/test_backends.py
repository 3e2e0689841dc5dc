"""Backends keep the `Completion` contract: n per request, stop kept, max_tokens honoured, EOS not in ids."""

from __future__ import annotations

import math

import pytest

from mcts_cot.backends import Request, make_backend
from mcts_cot.backends.base import stop_end
from mcts_cot.backends.scripted import ScriptedBackend
from mcts_cot.config import BackendConfig, ModelConfig


def test_stop_end_takes_the_earliest_stop():
    assert stop_end("a. b\n\nc", ("\n\n", ".")) == 2
    assert stop_end("abc", ("x",)) is None
    assert stop_end("abc", ()) is None


def test_scripted_keeps_stop_cuts_length_and_returns_n(byte_tok):
    backend = ScriptedBackend(byte_tok, lambda prompt, i: f"step {i}\n\nmore text")
    prompt = byte_tok.encode("question", add_special_tokens=False)
    stopped, cut = backend.generate([Request(prompt, n=3, stop=("\n\n",)), Request(prompt, n=1, max_tokens=4)])
    assert [c.text for c in stopped] == ["step 0\n\n", "step 1\n\n", "step 2\n\n"]
    assert all(c.finish == "stop" and byte_tok.decode(c.token_ids) == c.text for c in stopped)
    assert cut[0].finish == "length" and len(cut[0].token_ids) == 4 and cut[0].text == "step"
    assert backend.stats.requests == 2 and backend.stats.generated_tokens == 3 * 8 + 4


def test_make_backend_scripted_uses_the_model_tokenizer(tiny_model_dir):
    backend = make_backend(ModelConfig(name=str(tiny_model_dir)), BackendConfig(name="scripted"))
    assert isinstance(backend, ScriptedBackend) and backend.tokenizer.eos_token == "<|im_end|>"


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    backend = make_backend(ModelConfig(name=str(tiny_model_dir)), BackendConfig(name="hf", batch_size=4, seed=1))
    yield backend
    backend.close()


def _prompts(tok, *texts):
    return [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                    tokenize=True, return_dict=False) for t in texts]


def test_hf_shapes_n_and_contract(hf):
    p1, p2 = _prompts(hf.tokenizer, "What is 2+2?", "A much longer question about apples and pears?")
    out = hf.generate([Request(p1, n=3, max_tokens=12, temperature=1.0), Request(p2, n=3, max_tokens=12, temperature=1.0)])
    assert [len(o) for o in out] == [3, 3]
    for c in out[0] + out[1]:
        assert 0 < len(c.token_ids) <= 12
        assert not set(c.token_ids) & hf.eos_ids
        assert math.isfinite(c.logprob) and c.logprob < 0
        assert c.finish in ("eos", "length")
        assert c.text == hf.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    assert hf.stats.generated_tokens == sum(len(c.token_ids) for c in out[0] + out[1])


def test_hf_greedy_is_deterministic_and_batch_independent(hf):
    p1, p2 = _prompts(hf.tokenizer, "What is 2+2?", "A much longer question about apples and pears?")
    alone = hf.generate([Request(p1, n=1, max_tokens=16, temperature=0.0)])[0][0]
    batched = hf.generate([Request(p1, n=2, max_tokens=16, temperature=0.0),
                           Request(p2, n=1, max_tokens=16, temperature=0.0)])[0]
    assert batched[0].token_ids == batched[1].token_ids == alone.token_ids
    assert batched[0].logprob == pytest.approx(alone.logprob, abs=1e-3)


def test_hf_seeded_sampling_reproduces(hf):
    (p1,) = _prompts(hf.tokenizer, "Pick a number.")
    req = Request(p1, n=2, max_tokens=10, temperature=1.0, seed=7)
    assert [c.token_ids for c in hf.generate([req])[0]] == [c.token_ids for c in hf.generate([req])[0]]


def test_hf_stop_string_is_kept_and_ids_end_at_it(hf):
    (p1,) = _prompts(hf.tokenizer, "Say anything.")
    # Seeded sampling replays the same tokens, so a piece of the free text is a stop that certainly occurs.
    free = hf.generate([Request(p1, n=1, max_tokens=40, temperature=1.0, seed=3)])[0][0]
    assert len(free.text) > 8, free
    stop = free.text[5:7]
    got = hf.generate([Request(p1, n=1, max_tokens=40, temperature=1.0, seed=3, stop=(stop,))])[0][0]
    end = free.text.find(stop) + len(stop)
    assert got.finish == "stop" and got.text == free.text[:end]
    assert got.token_ids == free.token_ids[: len(got.token_ids)]
    assert hf.tokenizer.decode(got.token_ids).endswith(stop)
    assert not hf.tokenizer.decode(got.token_ids[:-1]).endswith(stop)
