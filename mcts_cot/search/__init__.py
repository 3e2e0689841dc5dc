"""Tree search: strategies that grow one verified tree per problem, and the engine that grows many at once.

- `config.py`: `SearchConfig` and the sections every strategy reads;
- `growth.py`: what every strategy shares (verdicts, backup, the finished record) and the `TreeGrower` interface;
- `mcts.py`, `best_of_n.py`, `fork.py`: the strategies, peers behind that interface;
- `engine.py`: many trees over one backend and one verifier (`Engine`, `run_waves`), in lock-step waves or
  continuously through `scheduler.py` (each tree keeps its own requests in flight).

The `search` command's shell (run dir, resume, manifest, progress, shards) is `mcts_cot/run.py`.
"""

from mcts_cot.backends.base import stable_seed
from mcts_cot.search.config import RESUMABLE_KEYS, SearchConfig
from mcts_cot.search.engine import STRATEGIES, Engine, run_waves
from mcts_cot.search.mcts import TreeSearch

__all__ = ["RESUMABLE_KEYS", "STRATEGIES", "Engine", "SearchConfig", "TreeSearch", "run_waves", "stable_seed"]
