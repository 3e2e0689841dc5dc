"""An engine pool: one generation engine per model, shared by the stages that generate with it.

vLLM takes minutes to start on a small CPU, so a workflow keeps one engine per (model, backend settings)
alive across the stages that use it (the base eval and round 1's search; a trained model's eval and the next
round's search) and shuts them before training. The pool IS a backend factory (`BackendFactory`): a workflow
passes it to `run_search` / `run_eval` like any other, and each stage gets the engine reset, so its samples
and figures are the ones its standalone command would produce.
"""

from __future__ import annotations

from mcts_cot.backends import Backend, BackendFactory, BackendStats, Completion, Request, make_backend
from mcts_cot.config import BackendConfig, ModelConfig, to_dict


class PooledBackend:
    """A pooled engine as one stage sees it: everything but `close`, which is the pool's to do."""

    def __init__(self, engine: Backend):
        self.engine = engine

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def stats(self) -> BackendStats:
        return self.engine.stats

    @property
    def per_request_seeds(self) -> bool:
        return self.engine.per_request_seeds

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        return self.engine.generate(requests)

    def submit(self, request: Request) -> int:
        return self.engine.submit(request)

    def poll(self) -> list[tuple[int, list[Completion]]]:
        return self.engine.poll()

    def cancel(self, ids: list[int]) -> None:
        self.engine.cancel(ids)

    def reset(self) -> None:
        self.engine.reset()

    def close(self) -> None:
        pass


class EnginePool:
    """A backend factory that starts each (model, settings) engine once; `release` shuts engines down."""

    def __init__(self, make: BackendFactory = make_backend):
        self.make = make
        self.engines: dict[tuple, Backend] = {}
        self.starts = 0

    def __call__(self, model: ModelConfig, backend: BackendConfig) -> Backend:
        key = (model.name, repr(to_dict(model)), repr(to_dict(backend)))
        if key not in self.engines:
            self.engines[key] = self.make(model, backend)
            self.starts += 1
        engine = self.engines[key]
        engine.reset()
        return PooledBackend(engine)

    def release(self, model: str | None = None) -> None:
        """Shut down every engine (or those of `model`): before training, and at the end."""
        for key in [k for k in self.engines if model is None or k[0] == model]:
            self.engines.pop(key).close()

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
