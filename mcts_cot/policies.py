"""Step policies: what one expansion of a node asks the model for, and when a node ends its path.

`plain`: a step is whatever the model writes up to a stop string (default a blank line, kept in the text).
`typed`: the paper's thought actions (sub-task, thinking, hypothesis, double-check, reflection, answer, ...),
each wrapped in tags, started with a prefill text, with child counts from a transition table (an action the
model leaves open, by ending its turn or at the length limit, is closed by the policy; only the answer action
ends a path with an answer, the others only at the depth and token limits); fixed-text
actions (reflection) are added without generation, and a wrong answer adds a reflection child under the
nearest double-check ancestor (error backtracking). Both come from YAML (`configs/search/*.yaml`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, Protocol

from mcts_cot.answers import read_answer
from mcts_cot.backends.base import Completion, Request
from mcts_cot.config import option
from mcts_cot.errors import UserError
from mcts_cot.tree import Node, TerminalReason, Tree


@dataclass
class PolicyConfig:
    """How the tree grows: step boundaries, branching and limits."""

    kind: Literal["plain", "typed"] = option("plain", "plain (steps end at a stop string) or typed (the paper's thought actions).")
    stop: list[str] = option(["\n\n"], "plain: strings that end a step (kept in the step text).")
    children: int = option(4, "plain: children sampled per expansion (the `n` of one request).", ge=1)
    root_children: int | None = option(None, "plain: children of the root (default: children).", ge=1)
    max_step_tokens: int = option(160, "Most tokens one step may generate.", ge=1)
    max_depth: int = option(12, "A node this deep ends its path (terminal reason max_depth).", ge=1)
    max_path_tokens: int = option(1024, "A path with this many generated tokens ends (terminal reason max_tokens).", ge=1)
    actions: dict = option({}, "typed: action name -> {open, close, prefill: [..], model: main|critic, fixed: bool, terminal: bool}.")
    transitions: dict = option({}, "typed: action name (root for the root) -> {child action: count}.")
    on_wrong: dict = option({}, "typed: error backtracking, e.g. {double_check: {reflection: 1}}: after a wrong answer, add these children under the nearest such ancestor (at most count each).")
    separator: str = option("\n", "typed: text appended after each closed action.")


@dataclass
class Expansion:
    """One request for children of `node`: the completions become nodes of `action`, each starting with
    `head_ids` / `head_text` (the action's open tag and prefill)."""

    node: Node
    request: Request
    action: str
    head_ids: list[int]
    head_text: str
    model: str = "main"


class StepPolicy(Protocol):
    """Everything a search strategy asks of a step policy; strategies never read the policy's config."""

    max_path_tokens: int

    def encode(self, text: str) -> list[int]: ...

    def path_tokens(self, tree: Tree, node: Node) -> int: ...

    def expansions(self, tree: Tree, node: Node, sampling: dict, seed: int) -> list[Expansion]: ...

    def child(self, exp: Expansion, completion: Completion) -> tuple[str, list[int]]: ...

    def classify(self, tree: Tree, node: Node) -> TerminalReason | None: ...

    def end_response(self, node: Node) -> TerminalReason: ...

    def fixed_children(self, tree: Tree, node: Node) -> list[tuple[str, str]]: ...

    def backtrack(self, tree: Tree, wrong: Node) -> list[tuple[Node, str]]: ...

    def fixed_text(self, action: str, node_id: int) -> str: ...


class Policy:
    """Shared logic: build requests, turn completions into nodes, decide terminals."""

    def __init__(self, cfg: PolicyConfig, tokenizer):
        self.cfg = cfg
        self.tok = tokenizer

    @property
    def max_path_tokens(self) -> int:
        return self.cfg.max_path_tokens

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def child(self, exp: Expansion, completion: Completion) -> tuple[str, list[int]]:
        """Text and token ids of the node a completion becomes: the request's head, then what the model wrote."""
        return exp.head_text + completion.text, exp.head_ids + completion.token_ids

    def end_response(self, node: Node) -> TerminalReason:
        """The terminal rule of a whole response (a rollout, a best-of-N sample): it ends with its answer
        when it states one, else with why generation stopped."""
        self.take_answer(node)
        if node.answer is not None:
            return "answer"
        return node.finish if node.finish in ("eos", "length") else "max_tokens"

    def take_answer(self, node: Node) -> None:
        """The node's answer and how it was recognised (boxed / phrase), by the one extractor of search,
        eval and rewards."""
        node.answer, node.answer_by = read_answer(node.text)

    def path_tokens(self, tree: Tree, node: Node) -> int:
        return tree.path_tokens(node)

    def step_budget(self, tree: Tree, node: Node) -> int:
        return max(1, min(self.cfg.max_step_tokens, self.cfg.max_path_tokens - self.path_tokens(tree, node)))

    def terminal_reason(self, node: Node, path_tokens: int) -> TerminalReason | None:
        """Why `node` ends its path, or None. An answer wins over the limits it may also hit."""
        if node.answer is not None:
            return "answer"
        if node.finish == "eos":
            return "eos"
        if node.finish == "length":
            return "length"
        return self.limit_reason(node, path_tokens)

    def limit_reason(self, node: Node, path_tokens: int) -> TerminalReason | None:
        """The path limits every policy keeps: depth and generated tokens."""
        if node.depth >= self.cfg.max_depth:
            return "max_depth"
        if path_tokens >= self.cfg.max_path_tokens:
            return "max_tokens"
        return None

    def fixed_children(self, tree: Tree, node: Node) -> list[tuple[str, str]]:
        return []

    def backtrack(self, tree: Tree, wrong: Node) -> list[tuple[Node, str]]:
        return []

    def fixed_text(self, action: str, node_id: int) -> str:
        raise NotImplementedError(f"{type(self).__name__} has no fixed-text actions")


class PlainPolicy(Policy):
    def expansions(self, tree: Tree, node: Node, sampling: dict, seed: int) -> list[Expansion]:
        n = self.cfg.root_children if (node.parent is None and self.cfg.root_children) else self.cfg.children
        req = Request(prompt_ids=tree.prompt_ids + tree.path_ids(node), n=n, stop=tuple(self.cfg.stop),
                      max_tokens=self.step_budget(tree, node), seed=seed, **sampling)
        return [Expansion(node=node, request=req, action="step", head_ids=[], head_text="")]

    def classify(self, tree: Tree, node: Node) -> TerminalReason | None:
        """A step ends its path with an answer only when it gives one (a box, or a closing "the answer is"
        with a mathematical expression), else at eos, the length cut or a path limit."""
        self.take_answer(node)
        return self.terminal_reason(node, self.path_tokens(tree, node))


class TypedPolicy(Policy):
    def __init__(self, cfg: PolicyConfig, tokenizer, rng_seed: int = 0):
        super().__init__(cfg, tokenizer)
        self._check()
        self.rng_seed = rng_seed

    def _check(self) -> None:
        acts = self.cfg.actions
        if not acts or not self.cfg.transitions:
            raise UserError("policy.kind typed needs policy.actions and policy.transitions (see configs/search/marco.yaml)")
        for src, dests in self.cfg.transitions.items():
            if src != "root" and src not in acts:
                raise UserError(f"policy.transitions: unknown action '{src}' (actions: {', '.join(acts)})")
            for dest in dests:
                if dest not in acts:
                    raise UserError(f"policy.transitions.{src}: unknown action '{dest}' (actions: {', '.join(acts)})")
        for src, dests in self.cfg.on_wrong.items():
            for name in [src, *dests]:
                if name not in acts:
                    raise UserError(f"policy.on_wrong: unknown action '{name}' (actions: {', '.join(acts)})")

    def _head(self, action: str, rng: random.Random) -> str:
        spec = self.cfg.actions[action]
        prefill = rng.choice(spec["prefill"]) if spec.get("prefill") else ""
        return spec.get("open", "") + prefill

    def expansions(self, tree: Tree, node: Node, sampling: dict, seed: int) -> list[Expansion]:
        rng = random.Random(seed)
        out = []
        base = tree.prompt_ids + tree.path_ids(node)
        for action, count in self.cfg.transitions.get("root" if node.parent is None else node.kind, {}).items():
            spec = self.cfg.actions[action]
            if spec.get("fixed") or not count:
                continue
            head = self._head(action, rng)
            head_ids = self.encode(head)
            stop = (spec["close"],) if spec.get("close") else ()
            req = Request(prompt_ids=base + head_ids, n=int(count), stop=stop,
                          max_tokens=self.step_budget(tree, node), seed=seed + len(out), **sampling)
            out.append(Expansion(node=node, request=req, action=action, head_ids=head_ids, head_text=head,
                                 model=spec.get("model", "main")))
        return out

    def child(self, exp: Expansion, completion: Completion) -> tuple[str, list[int]]:
        """An action its close tag stopped gets the separator, so the next action starts on a new line. A
        non-terminal action that ended with the model's turn or at the length limit is closed here (its close
        tag, then the separator): a small model rarely writes the close tag itself, and its step is still a
        step the tree can continue from (the end-of-turn token is not in the ids)."""
        text, ids = super().child(exp, completion)
        spec = self.cfg.actions.get(exp.action)
        if spec is None:
            return text, ids
        tail = self.cfg.separator if completion.finish == "stop" else ""
        if completion.finish in ("eos", "length") and spec.get("close") and not spec.get("terminal"):
            tail = spec["close"] + self.cfg.separator
        return text + tail, ids + self.encode(tail)

    def fixed_children(self, tree: Tree, node: Node) -> list[tuple[str, str]]:
        """(action, text) of fixed-text children the transition table gives `node`."""
        key = "root" if node.parent is None else node.kind
        rng = random.Random(f"{self.rng_seed}-{node.id}")
        return [(a, self._head(a, rng) + self.cfg.separator)
                for a, count in self.cfg.transitions.get(key, {}).items()
                if self.cfg.actions[a].get("fixed") for _ in range(int(count))]

    def classify(self, tree: Tree, node: Node) -> TerminalReason | None:
        """Only the answer action ends a path with an answer; any other action ends it only at a path limit,
        however its generation stopped (`child` closed it)."""
        if self.cfg.actions.get(node.kind, {}).get("terminal"):
            self.take_answer(node)
            return "answer"
        return self.limit_reason(node, self.path_tokens(tree, node))

    def backtrack(self, tree: Tree, wrong: Node) -> list[tuple[Node, str]]:
        """Error backtracking: the nearest `on_wrong` ancestor gets its extra children (once each)."""
        node = wrong
        while node.parent is not None:
            node = tree.nodes[node.parent]
            extra = self.cfg.on_wrong.get(node.kind)
            if extra:
                have = [c.kind for c in tree.children(node)]
                return [(node, a) for a, count in extra.items() for _ in range(int(count) - have.count(a))]
        return []

    def fixed_text(self, action: str, node_id: int) -> str:
        rng = random.Random(f"{self.rng_seed}-{node_id}-{action}")
        return self._head(action, rng) + self.cfg.separator


def make_policy(cfg: PolicyConfig, tokenizer, seed: int = 0) -> PlainPolicy | TypedPolicy:
    return TypedPolicy(cfg, tokenizer, seed) if cfg.kind == "typed" else PlainPolicy(cfg, tokenizer)

