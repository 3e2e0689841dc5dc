"""The search tree and its versioned, append-only record.

A tree is a flat list of `Node`s (id = index, root = 0) plus the problem and its rendered prompt. Token ids
are the state: a node holds exactly the tokens it added, so prompt + the ids along a path is the sequence the
model saw, and export / training never re-tokenise text. `Q = W / N` is the mean verified reward below a
node. One finished tree is one JSON line (`to_record`); `networkx` is the in-memory graph for analysis
(`to_graph` / `from_graph` round-trip without loss), but the file format does not depend on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import networkx as nx

from mcts_cot.errors import UserError

SCHEMA = 1
STOPPED = "stopped"  # the status of a tree a global limit cut short: unfinished, grown again on resume

Verdict = Literal["correct", "wrong", "unverifiable", "no_answer"]
# Why a node ends its path: it gave a final answer, the model ended its turn without one, the step was
# cut at max_tokens, or the path hit the depth / total-token limits.
TerminalReason = Literal["answer", "eos", "length", "max_depth", "max_tokens"]


@dataclass(slots=True)  # slots: faster to create and read; the engine makes one per generated step
class Node:
    id: int
    parent: int | None
    depth: int
    kind: str = "root"  # "root", "step" (plain policy) or a typed action name ("thinking", "answer", ...)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprob: float = 0.0  # cumulative log-probability of this node's generated tokens
    finish: str | None = None  # the backend's finish reason: stop / eos / length (None for root, fixed text)
    terminal: TerminalReason | None = None
    answer: str | None = None  # the extracted final answer of a terminal node
    answer_by: str | None = None  # how that answer was recognised: boxed or phrase (answers.read_answer)
    verdict: Verdict | None = None
    N: int = 0  # visits
    W: float = 0.0  # sum of backed-up rewards
    children: list[int] = field(default_factory=list, repr=False)

    @property
    def Q(self) -> float:
        return self.W / self.N if self.N else 0.0

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        del row["children"]
        return row


_NODE_KEYS = [f.name for f in fields(Node) if f.name != "children"]
_ADDED_KEYS = {"answer_by"}  # fields added within schema 1: records written before them still load


@dataclass
class Tree:
    problem: dict[str, Any]  # id, problem, answer (+ meta)
    prompt_ids: list[int]  # the rendered chat prompt, ending with the open assistant turn
    prompt_text: str = ""
    nodes: list[Node] = field(default_factory=list)
    status: str = "running"  # running, success, failure (by the strategy's budget rule), stopped (a global limit)
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, depth=0))
        self._path_tokens: list[int] = []  # per node id: tokens from the root down to it (filled lazily)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, **values: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, **values)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def path(self, node: Node) -> list[Node]:
        """Nodes from the root's first child down to `node` (the root holds no tokens)."""
        out = []
        while node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def path_tokens(self, node: Node) -> int:
        """Generated tokens from the root down to `node`, without walking the path: a node's ids never change
        once it is in the tree, and parents come before their children."""
        lens, nodes = self._path_tokens, self.nodes
        for n in nodes[len(lens):]:
            lens.append((lens[n.parent] if n.parent is not None else 0) + len(n.token_ids))
        return lens[node.id]

    def path_ids(self, node: Node) -> list[int]:
        return [t for n in self.path(node) for t in n.token_ids]

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal is not None]

    # ------------------------------------------------------------------------------------ record

    def to_record(self, config_hash: str = "") -> dict[str, Any]:
        return {
            "schema": SCHEMA, "config_hash": config_hash, "problem": self.problem,
            "prompt_ids": self.prompt_ids, "prompt_text": self.prompt_text,
            "status": self.status, "reason": self.reason, "stats": self.stats,
            "nodes": [n.to_row() for n in self.nodes],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "record") -> Tree:
        if record.get("schema") != SCHEMA:
            raise UserError(f"{where}: tree schema {record.get('schema')!r} is not supported (this mcts-cot reads schema {SCHEMA})")
        nodes = []
        for row in record["nodes"]:
            missing = [k for k in _NODE_KEYS if k not in row and k not in _ADDED_KEYS]
            if missing:
                raise UserError(f"{where}: node {row.get('id')} lacks {', '.join(missing)}")
            nodes.append(Node(**{k: row[k] for k in _NODE_KEYS if k in row}))
        for node in nodes:
            if node.parent is not None:
                nodes[node.parent].children.append(node.id)
        return cls(problem=record["problem"], prompt_ids=record["prompt_ids"], prompt_text=record.get("prompt_text", ""), nodes=nodes,
                   status=record["status"], reason=record.get("reason", ""), stats=record.get("stats", {}))

    # ------------------------------------------------------------------------------------ networkx

    def to_graph(self) -> nx.DiGraph:
        """A DiGraph whose nodes carry every node field and whose graph attrs carry the rest."""
        g = nx.DiGraph(problem=self.problem, prompt_ids=self.prompt_ids, prompt_text=self.prompt_text, status=self.status,
                       reason=self.reason, stats=self.stats)
        for node in self.nodes:
            g.add_node(node.id, **{k: v for k, v in node.to_row().items() if k != "id"})
            if node.parent is not None:
                g.add_edge(node.parent, node.id)
        return g

    @classmethod
    def from_graph(cls, g: nx.DiGraph) -> Tree:
        rows = [{"id": i, **g.nodes[i]} for i in sorted(g.nodes)]
        return cls.from_record({"schema": SCHEMA, "nodes": rows, **g.graph})
