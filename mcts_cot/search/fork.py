"""Fork: best-of-N's whole responses, then continuations forked from the step boundaries of the correct ones.

Best-of-N pays a whole response for every correct path; a tree can pay for the suffix alone. A fork tree samples
whole responses from the root exactly as best-of-N does (the same seeds, so on a seeded backend its root samples
are best-of-N's) and cuts each at the policy's step breaks (`policy.stop`) into a chain of step nodes, the
model's own token ids cut where the text breaks; identical steps under one parent are one node, so responses
that share steps share nodes, and a response that repeats one already in the tree is a merged draw: it counts
against `best_of_n.max_n` but is no new end (a copy teaches nothing, and counting it as another correct end
would tell the allocator a tree is nearer its cap than it is). A step that states an answer ends its chain, as
it ends an MCTS path. Once a response verifies correct, each step boundary on its path whose suffix there held
at least `fork.min_suffix_tokens` is forked once, deepest first (the cheapest suffix), with `fork.n`
continuations from the prefix up to it; a correct continuation adds its own boundaries. (The embedded model's
last step is mostly "The answer is \\boxed{17}.": resampling it alone gave copies.) Without a correct response
the tree is best-of-N.

The wrong continuations of a fork share the correct path's prefix: the step-level pairs (Step-DPO, TreeRL's
forked chains) the export cuts at that node. After TreeRL's EPTree (forking sampled chains rather than growing
step by step) and FastMCTS's staying on correct prefixes.
"""

from __future__ import annotations

from mcts_cot.answers import read_answer
from mcts_cot.backends.base import Completion, Request, stable_seed
from mcts_cot.checkpoints.split import paragraphs, token_bounds
from mcts_cot.errors import UserError
from mcts_cot.policies import Expansion
from mcts_cot.search.best_of_n import BestOfN
from mcts_cot.search.config import SearchConfig
from mcts_cot.tree import Node


class Fork(BestOfN):
    """One problem's sampled responses as step chains, forked below the correct ones."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.points: set[int] = set()  # step nodes on a correct path, not yet forked
        self.forked: set[int] = set()

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        """Forking needs step breaks (the plain policy) and a token budget to spend (not a fixed sample count)."""
        if cfg.policy.kind != "plain":
            raise UserError("strategy fork: needs policy.kind plain (its steps end at policy.stop)")
        if cfg.best_of_n.n is not None:
            raise UserError("strategy fork: samples to a token budget; set best_of_n.n to null and "
                            "best_of_n.tokens_per_problem or allocator.tokens_per_problem")
        super().check(cfg)

    def plan(self, slots: int | None = None) -> list[Expansion]:
        """A fork from the deepest waiting boundary, else best-of-N's next samples; one request at a time."""
        if self.pending or self.paused or self._spent() or self._enough():
            return []
        if not self.points:
            return super().plan(slots)
        nodes = self.tree.nodes
        node = nodes[max(self.points, key=lambda i: (nodes[i].depth, -i))]
        self.points.discard(node.id)
        self.forked.add(node.id)
        room = max(1, self.policy.max_path_tokens - self.tree.path_tokens(node))
        req = Request(prompt_ids=self.tree.prompt_ids + self.tree.path_ids(node), n=self.cfg.fork.n, max_tokens=room,
                      temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=stable_seed(self.seed, "fork", node.id))
        self.pending = True
        self.stats["forks"] += 1
        return [Expansion(node=node, request=req, action="fork", head_ids=[], head_text="")]

    def grow(self, exp: Expansion, completions: list[Completion]) -> list[Node]:
        self.pending = False
        out = []
        for comp in completions:
            self.stats["generated_tokens"] += len(comp.token_ids)
            end = self._chain(exp.node, comp)
            if end is None:
                self.stats["merged"] += 1
            else:
                out.append(end)
        return out

    def _chain(self, parent: Node, comp: Completion) -> Node | None:
        """The completion as step nodes under `parent` (steps it shares reused); its new end node, or None when
        the whole response is already in the tree."""
        tok, ids = self.policy.tok, list(comp.token_ids)
        bounds = token_bounds(tok, ids, paragraphs(comp.text, list(self.policy.cfg.stop)))
        pieces = [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a] or [ids]
        node = parent
        for k, piece in enumerate(pieces):
            text = tok.decode(piece)
            end = k == len(pieces) - 1 or read_answer(text)[0] is not None
            twin = next((c for c in self.tree.children(node) if c.text == text and (c.terminal is not None) == end), None)
            if twin is not None and end:
                return None
            node = twin or self.tree.add(node, kind="step", text=text, token_ids=piece, logprob=comp.logprob if end else 0.0,
                                         finish=comp.finish if k == len(pieces) - 1 else "stop")
            if end:
                break
        node.terminal = self.policy.end_response(node)
        return node

    def score(self, node: Node, verdict: str) -> None:
        """The shared backup; a correct end makes each unforked step boundary on its path a fork point, where the
        path's suffix after it holds at least `fork.min_suffix_tokens`."""
        super().score(node, verdict)
        if verdict == "correct":
            path, suffix = self.tree.path(node), 0
            for step, after in zip(reversed(path[:-1]), reversed(path[1:]), strict=True):
                suffix += len(after.token_ids)
                if suffix >= self.cfg.fork.min_suffix_tokens and step.id not in self.forked:
                    self.points.add(step.id)

    def _enough(self) -> bool:
        return self.stats["correct"] >= self.cfg.budget.success_correct

    def outcome(self) -> tuple[str, str] | None:
        """Success at `budget.success_correct` correct ends, else best-of-N's rule (every draw made)."""
        if self.pending:
            return None
        s = self.stats
        if self._enough():
            return "success", f"{s['correct']} correct ends ({s['forks']} forks, {s['waves']} root requests)"
        done = super().outcome()
        return done and (done[0], f"{done[1]}, {s['forks']} forks")
