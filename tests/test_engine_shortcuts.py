"""The engine's shortcuts (issue 15) give exactly what the long way gives: prompts without a template render per
problem, path lengths without walking the path, answers read with a pre-check."""

from __future__ import annotations

import pytest

from mcts_cot.answers import read_answer
from mcts_cot.config import PromptConfig
from mcts_cot.problems import arithmetic_problems
from mcts_cot.prompts import Prompter, prompt_ids
from mcts_cot.tree import Tree

ODD = ["What is 1+1?\n\nThen?", "  leading and trailing  ", "Unicode: é ü 你好", "\tTabbed", "x", "{braces} and $x$"]


@pytest.mark.parametrize("template", ["{problem}", "Problem: {problem}\nAnswer step by step."])
@pytest.mark.parametrize("shots", [True, False])
def test_prompter_gives_the_template_s_own_ids(byte_tok, template, shots):
    cfg = PromptConfig(template=template) if shots else PromptConfig(template=template, system="", few_shot=[])
    prompter = Prompter(byte_tok, cfg)
    problems = [p.problem for p in arithmetic_problems(20, "train")] + ODD
    assert [prompter(p) for p in problems] == [prompt_ids(byte_tok, cfg, p) for p in problems]
    assert prompter.parts is not None  # the shortcut was taken (the check above can fail)


def test_path_tokens_follow_the_tree_as_it_grows():
    tree = Tree(problem={"id": "p"}, prompt_ids=[1, 2])
    a = tree.add(tree.root, token_ids=[5, 6, 7])
    assert tree.path_tokens(a) == 3
    b = tree.add(a, token_ids=[8])
    c = tree.add(tree.root, token_ids=[9, 9])
    d = tree.add(b, token_ids=[1, 1, 1, 1])
    for node in (tree.root, a, b, c, d):
        assert tree.path_tokens(node) == len(tree.path_ids(node))
    assert tree.path_tokens(d) == 8


@pytest.mark.parametrize("text", [
    "Step: 2 + 3 = 5.\n\n", "The ANSWER is 7", "answer: 12", "So \\boxed{4}.", "\\fbox{x}", "no answer here at all",
    "The Answer Is: $5$.", "Final aNsWeR is (B)", "5 \\times 3 = 15", "", "Step 1.\n\nThe answer is 9",
])
def test_the_answer_pre_check_changes_no_answer(text):
    """A first line holding a lone backslash defeats the pre-check and changes neither the boxes nor the last line."""
    assert read_answer(text) == read_answer("\\ \n" + text)
