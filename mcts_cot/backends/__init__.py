"""Generation engines behind one interface (`Backend`), chosen by `backend.name`.

Imports are lazy: the scripted and hf backends must not import vLLM (slow to import, absent on some
machines), and nothing here imports torch until a backend is built.
"""

from __future__ import annotations

from collections.abc import Callable

from mcts_cot.backends.base import Backend, BackendStats, Completion, Request, stable_seed
from mcts_cot.config import BackendConfig, ModelConfig

__all__ = ["Backend", "BackendFactory", "BackendStats", "Completion", "Request", "make_backend", "scripted_factory", "stable_seed"]


BackendFactory = Callable[[ModelConfig, BackendConfig], Backend]
"""What builds a stage's engine: `make_backend`, an engine pool that shares engines between stages, or a
scripted factory in tests. Every command and workflow takes one, so nothing replaces `make_backend` at run time."""


def make_backend(model: ModelConfig, backend: BackendConfig) -> Backend:
    """Build the backend named by `backend.name` for `model` (scripted: the default script)."""
    if backend.name == "scripted":
        return scripted_factory()(model, backend)
    if backend.name == "hf":
        from mcts_cot.backends.hf_backend import HFBackend

        return HFBackend(model, backend)
    from mcts_cot.backends.vllm_backend import VLLMBackend

    return VLLMBackend(model, backend)


def scripted_factory(script=None, seeded: bool = False) -> BackendFactory:
    """A factory of scripted backends answering with `script` (default: made-up arithmetic), whatever
    backend the config names: for tests and dry runs (`seeded`: see ScriptedBackend)."""

    def make(model: ModelConfig, backend: BackendConfig) -> Backend:
        from mcts_cot.backends.scripted import ScriptedBackend, default_script
        from mcts_cot.models import load_tokenizer

        return ScriptedBackend(load_tokenizer(model.name), script or default_script, seeded=seeded)

    return make
