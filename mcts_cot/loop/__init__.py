"""Workflows that chain the commands: the closed loop, the ablation ladder and the best-of-N comparison.

Every stage is the library function behind its CLI command (`run_search`, `export.build` / `write`,
`trainers.trainer.run`, `run_eval`) and writes the directory that command would, so any stage can be re-run
by hand from its input. A recipe holds the sizes of every stage; each stage is its command's own YAML
(`config`) plus dotted overrides (`set`).

- `stages.py`: `Stage`, `load_loop_config`, and the `Runner` that runs a stage or skips it when done;
- `engines.py`: the engine pool, a backend factory that shares one engine per model between stages;
- `rounds.py`: `run_loop` (base eval, then rounds of search → export → train → eval);
- `ladder.py`: `run_ladder` (Marco-o1's Table 5 rows on one search run);
- `best_of_n.py`: the `best-of-n` command, best-of-N through the search shell;
- `compare.py` / `compare_report.py`: `run_compare`, MCTS against best-of-N at equal tokens (the yield proof);
- `reports.py`: the before / after table and results.json / results.md.
"""

from mcts_cot.loop.best_of_n import BestOfNConfig, sample_best_of_n
from mcts_cot.loop.compare import CompareConfig, run_compare
from mcts_cot.loop.compare_report import compare_table
from mcts_cot.loop.engines import EnginePool
from mcts_cot.loop.ladder import LadderConfig, ladder_table, run_ladder
from mcts_cot.loop.reports import before_after_table
from mcts_cot.loop.rounds import LoopConfig, run_loop
from mcts_cot.loop.stages import Runner, Stage, load_loop_config

__all__ = ["BestOfNConfig", "CompareConfig", "EnginePool", "LadderConfig", "LoopConfig", "Runner", "Stage",
           "before_after_table", "compare_table", "ladder_table", "load_loop_config",
           "run_compare", "run_ladder", "run_loop", "sample_best_of_n"]
