"""DTO (Dynamic Thinking pattern Optimization): cut a correct trajectory short where the model already knows.

At every checkpoint of a correct trajectory the exit prompt ("... Final Answer: \\boxed{") is appended and
`dto.probes` forced answers are sampled (all checkpoints in one wave); the exit point is the first checkpoint
where at least `dto.threshold` of them verify. The truncated trajectory is the prefix up to the exit point, the
closing phrase, and a final answer the model writes after it (greedy); it is a node beside the original
continuation and counts only if it verifies. The forced answers are probes, not tree nodes: their verdicts and
tokens are kept in the tree's stats (`dto`). Pairs: export-pairs' `dto` strategy (pairs.py).
"""

from __future__ import annotations

from mcts_cot.answers import boxes
from mcts_cot.backends.base import Request, stable_seed
from mcts_cot.checkpoints.seeded import EXIT, Seeded
from mcts_cot.policies import Expansion
from mcts_cot.tree import Node

PROBE = "probe"
NEXT = {"probe": "exit", "exit": "done", "done": "done"}


def probe_answer(text: str) -> str | None:
    """The forced answer: the content of the box the exit prompt opened (its first closing brace)."""
    found = boxes("\\boxed{" + text)
    content = found[0][0] if found else None
    return content.strip() or None if content is not None else None


def exit_point(votes: dict[int, list[str]], threshold: float) -> int | None:
    """The first checkpoint (in cut order) where at least `threshold` of the forced answers are correct."""
    for cut in sorted(votes):
        verdicts = votes[cut]
        if verdicts and sum(v == "correct" for v in verdicts) >= threshold * len(verdicts):
            return cut
    return None


class Dto(Seeded):
    """One problem's trajectories; each correct one probed at its checkpoints, then cut at its exit point."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phase = "probe"
        self.pending = 0
        self.report = [{"chain": i, "original_tokens": len(self.tree.path_ids(c.end)), "verdict": c.verdict,
                        "votes": {}, "exit": None, "truncated_tokens": None, "kept": False}
                       for i, c in enumerate(self.chains)]

    def _targets(self):
        return [(i, c) for i, c in enumerate(self.chains) if c.verdict == "correct" and c.cuts]

    def plan(self) -> list[Expansion]:
        if self.pending:
            return []
        out = self._probes() if self.phase == "probe" else self._exits() if self.phase == "exit" else []
        self.phase = NEXT[self.phase]
        self.pending = len(out)
        return out

    def _probes(self) -> list[Expansion]:
        d, out = self.cfg.dto, []
        head = self.policy.encode(d.exit_prompt)
        for i, chain in self._targets():
            for cut in chain.cuts:
                node = chain.at(cut)
                req = Request(prompt_ids=self.tree.prompt_ids + self.tree.path_ids(node) + head, n=d.probes,
                              max_tokens=d.probe_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                              seed=stable_seed(self.seed, "probe", node.id))
                out.append(Expansion(node=node, request=req, action=PROBE, head_ids=[], head_text=""))
                self.report[i]["votes"][cut] = []
        return out

    def _exits(self) -> list[Expansion]:
        d, out = self.cfg.dto, []
        head = self.policy.encode(d.closing)
        for i, chain in self._targets():
            cut = exit_point(self.report[i]["votes"], d.threshold)
            self.report[i]["exit"] = cut
            if cut is None:
                continue
            node = chain.at(cut)
            req = Request(prompt_ids=self.tree.prompt_ids + self.tree.path_ids(node) + head, n=1,
                          max_tokens=d.answer_tokens, temperature=0.0, seed=stable_seed(self.seed, "exit", node.id))
            out.append(Expansion(node=node, request=req, action=EXIT, head_ids=head, head_text=d.closing))
        return out

    def grow(self, exp: Expansion, completions) -> list[Node]:
        self.pending -= 1
        self.stats["expansions"] += 1
        if exp.action == PROBE:
            self.stats["generated_tokens"] += sum(len(c.token_ids) for c in completions)
            self.stats["probe_tokens"] += sum(len(c.token_ids) for c in completions)
            return [self._probe(exp.node, c) for c in completions]
        return [self.add_response(exp.node, EXIT, c, exp.head_text, exp.head_ids) for c in completions]

    @staticmethod
    def _probe(parent: Node, completion) -> Node:
        """A detached node (not in the tree) that carries a forced answer to the verifier."""
        answer = probe_answer(completion.text)
        return Node(id=-1, parent=parent.id, depth=parent.depth + 1, kind=PROBE, text=completion.text,
                    terminal="answer" if answer is not None else "eos", answer=answer)

    def score(self, node: Node, verdict: str) -> None:
        if node.kind == PROBE:
            chain = next(i for i, c in enumerate(self.chains) if any(n.id == node.parent for n in c.nodes))
            cut = next(k for k in self.chains[chain].cuts if self.chains[chain].at(k).id == node.parent)
            self.report[chain]["votes"][cut].append(verdict)
            return
        super().score(node, verdict)
        if node.kind == EXIT:
            i = next(i for i, c in enumerate(self.chains) if any(n.id == node.parent for n in c.nodes))
            self.report[i].update(truncated_tokens=len(self.tree.path_ids(node)), kept=verdict == "correct")

    def outcome(self) -> tuple[str, str] | None:
        if self.pending or self.phase != "done":
            return None
        kept = sum(r["kept"] for r in self.report)
        return ("success" if kept else "failure"), f"{len(self._targets())} correct trajectories probed, {kept} kept"

    def finish(self, status: str, reason: str):
        tree = super().finish(status, reason)
        tree.stats["dto"] = [{**r, "votes": {str(k): v for k, v in r["votes"].items()}} for r in self.report]
        return tree
