"""Checkpoint methods over existing trajectories, through the search engine and the run dir.

- `trajectories.py`: eval samples, a run's paths, or any JSONL of responses, grouped by problem;
- `split.py`: paragraphs, checkpoints (breaks before a reflection marker) and which to use;
- `seeded.py`: a `Growth` whose tree starts with each trajectory as a chain of paragraph nodes;
- `branching.py`: Checkpoint DPO continuations (right-to-wrong, wrong-to-right);
- `dto.py`: DTO early-exit truncation of correct trajectories;
- `driver.py`: the `mcts-cot checkpoints` shell (verify once, grow in waves, write the run dir);
- `recipe.py`: the DTO recipe (sample → truncate → export → SimPO → eval).

Pairs are cut by export-pairs' `checkpoint` and `dto` strategies (mcts_cot/pairs.py).
"""
