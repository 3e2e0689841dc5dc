"""The published dataset's schema: every column of every config, its type and what it means.

One table serves three readers: the parquet files are written with these types (so a column has the same type
in every file and strategy: an all-empty `prefix_ids` is still a list of int64, never null), the dataset card
documents each column from it, and a row with a column the table lacks is refused before anything is written.
"""

from __future__ import annotations

from typing import Any

IDS = "ids"  # list of int64 token ids
MESSAGES = "messages"  # list of {role, content} chat messages (TRL's conversational format)

_META = {
    "problem_id": ("string", "Problem id; the train / validation split is a seeded hash of it, so a problem is on one side only."),
    "model": ("string", "The model that grew the tree (an alias, Hugging Face id or folder)."),
    "tokenizer": ("string", "The tokenizer of every `*_ids` column (the same as `model`)."),
    "split": ("string", "train or validation (the same as the split the row is in)."),
}

SFT = {
    "problem_id": _META["problem_id"],
    "prompt": ("string", "The rendered chat prompt (system line, worked examples, the problem, the open assistant turn)."),
    "completion": ("string", "The correct response, as the model wrote it."),
    "prompt_ids": (IDS, "Token ids of `prompt`, exactly as the search sent them to the model."),
    "completion_ids": (IDS, "Token ids of `completion`, as generated (no end-of-turn token)."),
    "complete": ("bool", "The response ends in a final answer: a trainer appends the end-of-turn token."),
    "rank": ("string", "Thoughts Length Balance rank among the problem's correct paths: shortest, medium or longest."),
    "num_tokens": ("int64", "Length of `completion_ids`."),
    "model": _META["model"], "tokenizer": _META["tokenizer"], "split": _META["split"],
}

PAIRS = {
    "problem_id": _META["problem_id"],
    "strategy": ("string", "The rule that made the pair: path, step, length, checkpoint or dto."),
    "prompt": ("string", "The rendered chat prompt followed by the shared reasoning prefix, as text."),
    "chosen": ("string", "The preferred continuation after `prompt`."),
    "rejected": ("string", "The dispreferred continuation after `prompt`."),
    "prompt_ids": (IDS, "Token ids of the rendered chat prompt (without the shared prefix)."),
    "prefix_ids": (IDS, "Token ids both responses share after the prompt (empty when they differ from the first token)."),
    "chosen_ids": (IDS, "Token ids of the chosen suffix after the shared prefix (no end-of-turn token)."),
    "rejected_ids": (IDS, "Token ids of the rejected suffix after the shared prefix (no end-of-turn token)."),
    "chosen_complete": ("bool", "The chosen side ends in a final answer."),
    "rejected_complete": ("bool", "The rejected side ends in a final answer."),
    "chosen_end": ("string", "How the chosen side ends: answer or eos (the model ended its turn: append end-of-turn), "
                             "step (a step the tree went on from), length, max_depth or max_tokens (cut by a limit)."),
    "rejected_end": ("string", "How the rejected side ends (the same values as `chosen_end`)."),
    "chosen_q": ("float64", "MCTS value Q of the chosen node (mean verified reward below it)."),
    "rejected_q": ("float64", "MCTS value Q of the rejected node."),
    "chosen_n": ("int64", "Visit count N of the chosen node."),
    "rejected_n": ("int64", "Visit count N of the rejected node."),
    "confidence": ("float64", "MCTS-DPO's visit confidence of the pair."),
    "epsilon": ("float64", "Per-pair cDPO label smoothing derived from `confidence` (0.5: no preference signal)."),
    "model": _META["model"], "tokenizer": _META["tokenizer"], "split": _META["split"],
}

SFT_CHAT = {
    "problem_id": _META["problem_id"],
    "prompt": (MESSAGES, "The chat messages the search rendered: system line, worked examples, the problem (user)."),
    "completion": (MESSAGES, "One assistant message: the correct response."),
    "split": _META["split"],
}

PAIRS_CHAT = {
    "problem_id": _META["problem_id"],
    "strategy": PAIRS["strategy"],
    "prompt": SFT_CHAT["prompt"],
    "chosen": (MESSAGES, "One assistant message: the shared prefix followed by the chosen suffix."),
    "rejected": (MESSAGES, "One assistant message: the shared prefix followed by the rejected suffix."),
    "chosen_end": PAIRS["chosen_end"], "rejected_end": PAIRS["rejected_end"],
    "split": _META["split"],
}

NODES = {
    "problem_id": _META["problem_id"],
    "id": ("int64", "Node id within its tree (0 is the root: the prompt)."),
    "parent": ("int64", "Parent node id (null for the root)."),
    "depth": ("int64", "Steps from the root."),
    "kind": ("string", "root, step (plain policy) or a typed action (thinking, answer, ...)."),
    "text": ("string", "The step's text."),
    "token_ids": (IDS, "The step's token ids; a node's path is the concatenation from the root."),
    "logprob": ("float64", "Summed log-probability of the step's generated tokens."),
    "finish": ("string", "The backend's finish reason: stop, eos or length (null for the root and fixed text)."),
    "terminal": ("string", "Why the path ends here (answer, eos, length, max_depth, max_tokens), or null."),
    "answer": ("string", "The extracted final answer of a terminal node."),
    "answer_by": ("string", "How the answer was recognised: boxed or phrase."),
    "verdict": ("string", "correct, wrong, no_answer or unverifiable (terminal nodes only)."),
    "N": ("int64", "Visit count."),
    "W": ("float64", "Sum of backed-up rewards (Q = W / N)."),
    "model": _META["model"], "split": _META["split"],
}

CONFIGS: dict[str, dict[str, tuple[str, str]]] = {
    "sft": SFT, "pairs": PAIRS, "sft_chat": SFT_CHAT, "pairs_chat": PAIRS_CHAT, "nodes": NODES,
}


def _feature(kind: str):
    from datasets import List, Value

    if kind == IDS:
        return List(Value("int64"))
    if kind == MESSAGES:
        return List({"role": Value("string"), "content": Value("string")})
    return Value(kind)


def features(config: str):
    """The `datasets.Features` of one config, columns in table order."""
    from datasets import Features

    return Features({name: _feature(kind) for name, (kind, _) in CONFIGS[config].items()})


def conform(config: str, rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Rows with exactly the table's columns: a missing one becomes null, ids that are numbers elsewhere become
    strings, and a column the table lacks is an error naming it (it would be published undocumented)."""
    table = CONFIGS[config]
    out = []
    for i, row in enumerate(rows):
        extra = sorted(set(row) - set(table))
        if extra:
            raise ValueError(f"{where}: row {i} has columns the dataset card does not document: {', '.join(extra)}")
        out.append({name: _cell(row.get(name), kind) for name, (kind, _) in table.items()})
    return out


def _cell(value: Any, kind: str) -> Any:
    return str(value) if kind == "string" and value is not None and not isinstance(value, str) else value
