"""The continuous scheduler on a scripted backend: trees do not depend on the order in which requests finish nor
on how long verification takes, k = 1 grows the trees that waves grow (with and without the allocator), a
finished tree cancels its requests in flight and frees its slot at once."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from mcts_cot.backends.scripted import ScriptedBackend, default_script
from mcts_cot.config import load_config
from mcts_cot.problems import Problem
from mcts_cot.search import Engine, SearchConfig, run_waves

PROBLEMS = [Problem(id=f"p{i}", problem=f"What is {i} + 0?", answer=str(i % 10)) for i in range(12)]


class ExactVerifier:
    def verify_batch(self, items):
        return ["no_answer" if a is None else "correct" if a == g else "wrong" for g, a in items]


class SlowVerifier(ExactVerifier):
    """Verifies in a background thread, each batch taking its time: the scheduler must not depend on when."""

    def __init__(self, seed: int):
        self.pool, self.rng = ThreadPoolExecutor(1), random.Random(seed)

    def submit(self, items):
        import time

        pause = self.rng.random() * 0.002
        return self.pool.submit(lambda: (time.sleep(pause), self.verify_batch(items))[1])


def shuffled(seed: int, share: float):
    """A completion order: a seeded random subset of the queued requests, in random order (at least one)."""
    rng = random.Random(seed)

    def order(ids: list[int]) -> list[int]:
        ids = [i for i in ids if rng.random() < share] or ids[:1]
        rng.shuffle(ids)
        return ids

    return order


def config(*sets: str) -> SearchConfig:
    return load_config(SearchConfig, None, [
        "backend.name=scripted", "prompt.few_shot=[]", "prompt.system=''", "policy.children=3",
        "budget.max_rollouts=24", "budget.success_correct=4", "concurrent_trees=5", *sets])


def grow(byte_tok, cfg: SearchConfig, order=None, verifier=None, problems=PROBLEMS):
    backend = ScriptedBackend(byte_tok, default_script, order)
    engine = Engine(cfg, {"main": backend}, verifier or ExactVerifier(), byte_tok)
    done = []
    run_waves(engine, problems, done.extend)
    return {t.problem["id"]: [(n.parent, n.text, n.N, n.W, n.verdict) for n in t.nodes] for t in done}, backend


@pytest.mark.parametrize("k", [1, 3])
def test_trees_do_not_depend_on_completion_order_or_verification_time(byte_tok, k):
    cfg = config("schedule=continuous", f"in_flight_per_tree={k}")
    fifo, _ = grow(byte_tok, cfg)
    for seed in range(3):
        again, _ = grow(byte_tok, cfg, order=shuffled(seed, 0.3), verifier=SlowVerifier(seed))
        assert again == fifo
    assert len(fifo) == len(PROBLEMS) and all(len(nodes) > 1 for nodes in fifo.values())


def test_more_in_flight_grows_other_trees(byte_tok):
    one, _ = grow(byte_tok, config("schedule=continuous", "in_flight_per_tree=1"))
    three, _ = grow(byte_tok, config("schedule=continuous", "in_flight_per_tree=3"))
    assert one != three  # k changes what selection sees (virtual visits), so the comparison above can fail


@pytest.mark.parametrize("allocated", [False, True])
def test_one_in_flight_grows_the_trees_of_waves(byte_tok, allocated):
    sets = ["allocator.tokens_per_problem=120", "allocator.step_tokens=30", "allocator.group=6",
            "budget.max_rollouts=999"] if allocated else []
    waves, _ = grow(byte_tok, config("schedule=waves", *sets))
    continuous, _ = grow(byte_tok, config("schedule=continuous", "in_flight_per_tree=1", *sets),
                         order=shuffled(7, 0.5))
    assert continuous == waves


def test_allocator_trees_do_not_depend_on_completion_order(byte_tok):
    cfg = config("schedule=continuous", "in_flight_per_tree=2", "allocator.tokens_per_problem=120",
                 "allocator.step_tokens=30", "allocator.group=6", "budget.max_rollouts=999")
    fifo, _ = grow(byte_tok, cfg)
    again, _ = grow(byte_tok, cfg, order=shuffled(3, 0.25), verifier=SlowVerifier(3))
    assert again == fifo


def test_a_finished_tree_cancels_its_requests_and_frees_its_slot(byte_tok):
    """Every answer is right: a tree is done at its first correct leaf while its other leaves are still out;
    those requests are cancelled, and the next problem starts in the same step."""
    problems = [Problem(id=f"q{i}", problem=f"What is {i}?", answer="7") for i in range(4)]

    def script(prompt: str, index: int) -> str:
        return "The answer is \\boxed{7}." if "Go on" in prompt else f"Go on {index}.\n\n"

    cfg = config("schedule=continuous", "in_flight_per_tree=4", "budget.success_correct=1", "concurrent_trees=1")
    backend = ScriptedBackend(byte_tok, script, order=lambda ids: ids[:1])  # one request finishes per poll
    engine = Engine(cfg, {"main": backend}, ExactVerifier(), byte_tok)
    done = []
    run_waves(engine, problems, done.extend)
    assert [t.status for t in done] == ["success"] * 4
    assert len(backend.cancelled) == 4 * 2  # the root's 3 children go out as 3 leaves; the 1st answers, 2 cancelled
    assert not backend.queued and not engine.scheduler.owner and not engine.scheduler.lanes
    assert backend.stats.requests == 4 * 2  # cancelled requests were never generated
    assert engine.waves == 4 * 2  # two steps a tree: the next tree starts in the step after the last one ended
