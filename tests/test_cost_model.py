"""The simulated GPU engine of the occupancy bench: one token per running sequence per step, a finished sequence
frees its slot at once, cancelled requests leave the batch, and under it continuous scheduling fills the batch
better than waves while growing the same trees (k = 1)."""

from __future__ import annotations

from mcts_cot.backends.base import Completion, Request
from mcts_cot.backends.cost_model import CostModelBackend, GpuStep
from mcts_cot.config import load_config
from mcts_cot.problems import Problem
from mcts_cot.prompts import Prompter
from mcts_cot.search import Engine, SearchConfig, run_waves


def comp(tok, text: str, finish: str = "stop") -> Completion:
    return Completion(token_ids=tok.encode(text, add_special_tokens=False), text=text, logprob=-1.0, finish=finish)


def test_a_finished_sequence_frees_its_slot_and_cancel_leaves_the_batch(byte_tok):
    prompt = [1, 2, 3]
    backend = CostModelBackend(byte_tok, [prompt], [[comp(byte_tok, "abcdef")]], max_num_seqs=2, block=2)
    a = backend.submit(Request(prompt_ids=prompt, n=1, max_tokens=2, seed=1))  # 2 tokens: 2 steps
    b = backend.submit(Request(prompt_ids=prompt, n=1, max_tokens=6, seed=2))  # 6 steps
    c = backend.submit(Request(prompt_ids=prompt, n=1, max_tokens=3, seed=3))  # waits for a slot
    assert backend.poll() == [] and backend.occupancy.per_step == [2]
    done = backend.poll()
    assert [rid for rid, _ in done] == [a] and done[0][1][0].finish == "length"
    assert backend.poll() == [] and backend.occupancy.per_step == [2, 2, 2]  # c took a's slot at once
    backend.cancel([b])
    assert backend.poll() == [] and backend.occupancy.per_step[-1] == 1
    assert [rid for rid, _ in backend.poll()] == [c]
    assert backend.occupancy.share(2) == sum([2, 2, 2, 1, 1]) / (5 * 2)
    assert backend.occupancy.prefill_tokens == 3 + 1 + 1  # the block of 2 computed once, the odd token each time


def test_the_step_model_is_the_stated_line():
    step = GpuStep(base_ms=10, per_seq_ms=0.5, per_prefill_token_ms=0.1)
    assert step.ms(running=8, prefill_tokens=100) == 10 + 4 + 10


def test_continuous_fills_the_batch_better_and_grows_the_same_trees(byte_tok):
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i % 4)) for i in range(16)]
    steps = [comp(byte_tok, "Short.\n\n"), comp(byte_tok, "A much longer step that takes many more tokens.\n\n"),
             comp(byte_tok, "So the answer is \\boxed{1}.", "eos"), comp(byte_tok, "The answer is \\boxed{2}.", "eos")]
    grown = {}
    for schedule in ("waves", "continuous"):
        cfg = load_config(SearchConfig, None, ["backend.name=scripted", "prompt.few_shot=[]", "prompt.system=''",
                                               f"schedule={schedule}", "in_flight_per_tree=1", "concurrent_trees=4",
                                               "policy.children=3", "budget.max_rollouts=12"])
        prompter = Prompter(byte_tok, cfg.prompt)
        backend = CostModelBackend(byte_tok, [prompter(p.problem) for p in problems], [steps] * len(problems),
                                   max_num_seqs=12)
        trees = []

        class Exact:
            def verify_batch(self, items):
                return ["no_answer" if a is None else "correct" if a == g else "wrong" for g, a in items]

        run_waves(Engine(cfg, {"main": backend}, Exact(), byte_tok), problems, trees.extend)
        grown[schedule] = ({t.problem["id"]: [(n.parent, n.text) for n in t.nodes] for t in trees},
                           backend.occupancy.share(12))
    assert grown["continuous"][0] == grown["waves"][0]
    assert grown["continuous"][1] > 1.1 * grown["waves"][1]  # measured 0.65 vs 0.53
