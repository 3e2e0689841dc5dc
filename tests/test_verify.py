"""Answer extraction and the math-verify worker pool (real math-verify 0.9.0 in real worker processes).

Every expected verdict below is what math-verify 0.9.0 actually returns; the surprising ones say so.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mcts_cot.answers import extract_answer, read_answer
from mcts_cot.config import VerifyConfig
from mcts_cot.errors import UserError
from mcts_cot.verify import Verifier, check_golds

TOWER = r"9^{9^{9^{9^{9}}}}"  # Math-Verify #59
NESTED_LOG = "x"
for _ in range(30):
    NESTED_LOG = rf"\log({NESTED_LOG})"  # Math-Verify #63
ISSUE_65 = r"\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)} - 4\right)} - 5}{16}"


@pytest.fixture(scope="module")
def verifier():
    """One pool for the whole module; the timeout is generous so a loaded machine never trips it."""
    with Verifier(workers=2, timeout_s=20.0) as v:
        yield v


# ------------------------------------------------------------------------------------- verdicts

CASES = [
    # equivalent forms, fractions and decimals
    (r"\frac{1}{2}", r"So the answer is $\boxed{0.5}$.", "correct"),
    (r"\frac{1}{2}", "The answer is 1/2.", "correct"),
    ("0.5", r"\boxed{\frac{1}{2}}", "correct"),
    (r"\frac{1}{2}", r"\boxed{\dfrac{1}{2}}", "correct"),
    (r"\dfrac{9}{7}", r"\boxed{\frac{9}{7}}", "correct"),
    ("1/2", r"\boxed{.5}", "correct"),
    ("3.5", r"\boxed{7/2}", "correct"),
    (r"\frac{1}{3}", r"\boxed{0.333333}", "correct"),  # six decimals are enough (float_rounding=6)
    (r"\frac{1}{3}", r"\boxed{0.333}", "wrong"),
    ("2", r"\boxed{2.0000001}", "wrong"),  # surprising: not rounded to 6 places before comparing
    # \text{}, units, multiple choice
    (r"\text{5}", r"\boxed{5}", "correct"),
    ("5", r"\boxed{5 \text{ cm}}", "correct"),
    (r"5 \text{ cm}", r"\boxed{5}", "correct"),
    (r"\text{(B)}", "The answer is **B**", "correct"),
    ("3", r"\boxed{\text{three}}", "wrong"),
    (r"\text{Evelyn}", r"\boxed{evelyn}", "correct"),  # surprising: a bare word parses as E*e*l*n*v*y ...
    (r"\text{Evelyn}", r"\boxed{Lenvye}", "wrong"),  # ... yet an anagram (same product) is still rejected
    # sets, tuples, intervals, multiple answers
    (r"\{1,2\}", r"\boxed{2,1}", "correct"),
    ("1,2", r"\boxed{\{2, 1\}}", "correct"),
    (r"1331 \text{ and } 1728", r"\boxed{1728}", "wrong"),  # a partial answer fails in 0.9.0 (cf. #47)
    (r"1331 \text{ and } 1728", r"\boxed{1728, 1331}", "correct"),
    ("[1,2)", r"\boxed{[1,2)}", "correct"),
    ("[1,2)", r"\boxed{(1,2)}", "wrong"),
    (r"(-\infty, 3]", r"\boxed{(-\infty,3]}", "correct"),
    ("(1,2)", r"\boxed{(2,1)}", "wrong"),
    (r"\{1,2\}", r"\boxed{(1,2)}", "correct"),  # surprising: a set gold accepts a tuple/interval
    # verify(gold, prediction) is not symmetric: these two flip if the arguments are swapped
    ("(1,2)", r"\boxed{1<x<2}", "wrong"),
    (r"x \le 3", r"\boxed{(-\infty, 3]}", "correct"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \pi/2)}", "correct"),
    # markdown, gold not in LaTeX, signs, separators
    ("42", "**The answer is 42**", "correct"),
    ("18", "The answer is: $18.", "correct"),
    ("18", r"Final Answer: \(18\)", "correct"),
    ("-3", r"\boxed{-3}", "correct"),
    ("-3", r"\boxed{3}", "wrong"),
    (r"-\frac{1}{2}", r"\boxed{\frac{-1}{2}}", "correct"),
    ("1000", r"\boxed{1,000}", "correct"),
    ("1,000", r"\boxed{1000}", "correct"),
    ("1000000", "The answer is 1,000,000.", "correct"),
    ("42", r"\boxed{43}", "wrong"),
    ("7", r"First \boxed{3}, then, correcting myself, \boxed{7}", "correct"),
    ("12", r"\fbox{12}", "correct"),
    # percentages: both 50 and 0.5 pass for 50\%
    (r"50\%", r"\boxed{50}", "correct"),
    (r"50\%", r"\boxed{0.5}", "correct"),
    ("25", r"\boxed{25\%}", "correct"),
    # roots, pi, powers, degrees, equations
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}", "correct"),
    (r"\frac{\sqrt{2}}{2}", r"\boxed{\frac{1}{\sqrt{2}}}", "correct"),
    (r"\sqrt{3}", r"\boxed{3^{1/2}}", "correct"),
    (r"\sqrt{3}", r"\boxed{1.732}", "wrong"),
    (r"2\pi", r"\boxed{6.283185}", "correct"),
    (r"\pi", r"\boxed{3.14}", "wrong"),
    ("i", r"\boxed{\sqrt{-1}}", "wrong"),  # surprising: sqrt(-1) is not taken as i
    ("10^{10}", r"\boxed{10000000000}", "correct"),
    (r"90^\circ", r"\boxed{90}", "correct"),
    ("x=3", r"\boxed{3}", "correct"),
    ("3", r"\boxed{x=3}", "correct"),
    ("x^2+1", r"\boxed{1+x^2}", "correct"),
    # no answer, unusable gold
    ("18", "I think it is about eighteen", "no_answer"),
    ("18", r"\boxed{}", "no_answer"),
    ("18", r"\boxed{18", "no_answer"),
    ("???", r"\boxed{18}", "unverifiable"),
    ("}{", r"\boxed{18}", "unverifiable"),
]


@pytest.mark.parametrize(("gold", "output", "expected"), CASES)
def test_verdict(verifier, gold, output, expected):
    assert verifier.verify_batch([(gold, extract_answer(output))]) == [expected]


def test_a_batch_keeps_item_order(verifier):
    items = [(str(k), str(k + k % 2)) for k in range(20)] + [("1", None), ("1", "  ")]
    expected = ["correct" if k % 2 == 0 else "wrong" for k in range(20)] + ["no_answer", "no_answer"]
    assert verifier.verify_batch(items) == expected


def test_submit_result_equals_verify_batch(verifier):
    items = [(g, extract_answer(o)) for g, o, _ in CASES[:12]]
    first, second = verifier.submit(items), verifier.submit(list(reversed(items)))
    assert first.result() == verifier.verify_batch(items)
    assert second.result() == list(reversed(first.result()))


def test_cache_answers_repeats_without_workers(verifier):
    items = [("7001", "7001"), ("7002", "7003"), ("7001", "7001")]  # the third repeats the first
    hits = verifier.stats.cache_hits
    assert verifier.verify_batch(items) == ["correct", "wrong", "correct"]
    assert verifier.stats.cache_hits == hits + 1
    assert verifier.verify_batch(items) == ["correct", "wrong", "correct"]
    assert verifier.stats.cache_hits == hits + 1 + len(items)


def test_from_config():
    with Verifier.from_config(VerifyConfig(workers=1, timeout_s=7.0, memory_mb=1024)) as v:
        assert (len(v.pids), v.timeout_s, v.memory_mb) == (1, 7.0, 1024)


def test_too_little_memory_is_reported():
    with pytest.raises(UserError, match="raise verify.memory_mb"), Verifier(workers=1, memory_mb=1) as v:
        v.verify_batch([("1", "1")])


# ----------------------------------------------------------------------------------- robustness

HOSTILE = [
    ("5", TOWER),
    ("5", NESTED_LOG),
    ("5", "(10^{10})!"),
    ("5", "+".join([r"\frac{1}{2}"] * 5000)),  # an enormous repeated expression
    ("5", "(" * 500 + "1" + ")" * 500),
    (ISSUE_65, "5"),  # the hostile side can be the gold
]


def test_hostile_inputs_time_out_and_the_pool_keeps_working():
    timeout_s = 1.0
    with Verifier(workers=2, timeout_s=timeout_s) as v:
        assert v.verify_batch([("1", "1")]) == ["correct"]  # workers are up
        start = time.monotonic()
        verdicts = v.verify_batch(HOSTILE + [("1/2", "0.5")])
        elapsed = time.monotonic() - start
        assert verdicts == ["unverifiable"] * len(HOSTILE) + ["correct"]
        assert elapsed < len(HOSTILE) * (timeout_s + 1)  # each costs its timeout plus a restart, not a hang
        assert v.stats.timeouts == v.stats.restarts == len(HOSTILE)
        assert v.verify_batch([(r"\frac{1}{2}", "0.5"), ("3", "4")]) == ["correct", "wrong"]


def test_a_worker_killed_mid_item_is_replaced():
    with Verifier(workers=1, timeout_s=30.0) as v:
        assert v.verify_batch([("1", "1")]) == ["correct"]
        (pid,) = v.pids
        handle = v.submit([("5", TOWER), ("1/2", "0.5")])
        time.sleep(0.5)  # the worker is now stuck on the tower
        os.kill(pid, signal.SIGKILL)
        assert handle.result(timeout=20) == ["unverifiable", "correct"]
        assert (v.stats.restarts, v.stats.timeouts) == (1, 0)
        assert v.pids != [pid]
        assert v.verify_batch([("2", "2")]) == ["correct"]


# ------------------------------------------------------------------------------------ gold answers


@pytest.mark.parametrize("gold", ["18", "1/2", r"\dfrac{9}{7}", r"\text{(B)}", r"\left( 3, \frac{\pi}{2} \right)"])
def test_check_golds_accepts(gold):
    assert check_golds([gold]) == [True]


@pytest.mark.parametrize("gold", ["", "???", "}{", r"\boxed{"])
def test_check_golds_rejects(gold):
    assert check_golds([gold]) == [False]


def test_check_golds_works_off_the_main_thread():
    out = []
    thread = threading.Thread(target=lambda: out.append(check_golds(["1/2"])))
    thread.start()
    thread.join()
    assert out == [[True]]


def test_a_5000_digit_integer_is_a_valid_answer(verifier):
    big = "9" * 5000  # past Python's 4300-digit int() limit, which made it "does not parse"
    assert check_golds([big]) == [True]
    assert verifier.verify_batch([(big, big), (big, "9" * 4999 + "8")]) == ["correct", "wrong"]


def test_gold_checks_run_with_the_given_verify_config():
    with pytest.raises(UserError, match="raise verify.memory_mb"):
        check_golds(["1"], VerifyConfig(workers=1, memory_mb=1))
    assert check_golds(["1", "x^"], VerifyConfig(workers=1, timeout_s=9.0)) == [True, False]  # a new pool


# -------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(("text", "expected"), [
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"first \boxed{3} then \boxed{ 7 }.", "7"),
    (r"\fbox{12}", "12"),
    (r"\boxed {x^{2}}", "x^{2}"),
    (r"\boxed{4} and a cut-off \boxed{\frac{1}{", "4"),
    (r"The answer is 4. \boxed{5}", "5"),
    ("**The answer is 42**", "42"),
    ("The answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
    ("Answer: 17\nThe answer is: **-2**.", "-2"),
    ("no answer here", None),
    (r"\boxed{}", None),
    ("The answer is", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Let's figure out what the answer is by adding the numbers.\n\n", (None, None)),  # words, not an answer
    ("So the answer is 2 * 3 = 6.", (None, None)),  # an equation: a computation, not a stated answer
    ("The answer is 8 apples.", (None, None)),
    ("The answer is 8.\n\nLet me add them again: 3 + 5.", (None, None)),  # not the closing statement
    ("The answer is 8, since 3 + 5 = 8.", (None, None)),
    ("So the answer is 8.\n\n", ("8", "phrase")),
    ("Adding them, the answer is -3/4.", ("-3/4", "phrase")),
    ("Thus the answer is $\\frac{3}{4}$.", ("\\frac{3}{4}", "phrase")),
    ("The answer is 2\\sqrt{2} + x.", ("2\\sqrt{2} + x", "phrase")),
    ("The answer is (B).", ("(B)", "phrase")),
    ("The answer is $1,234.", ("1,234", "phrase")),
    ("We get 2 * 3 = 6, so the answer is \\boxed{6}.", ("6", "boxed")),
    ("The answer is \\boxed{x = 3}", ("x = 3", "boxed")),  # a box is the model's own marking: taken as is
])
def test_an_answer_is_a_box_or_a_closing_statement_of_a_mathematical_expression(text, expected):
    assert read_answer(text) == expected
    assert extract_answer(text) == expected[0]
