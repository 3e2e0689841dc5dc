"""`report_to` trackers, checked before training starts.

transformers only notices a tracker it does not know, or one whose package is missing, when the Trainer
builds its callbacks: after the model has loaded, as a traceback ("WandbCallback requires wandb to be
installed"). Checked with the config instead, the mistake is one line that says what to install.
"""

from __future__ import annotations

import difflib
import importlib.util

from mcts_cot.errors import UserError

# transformers' report_to name -> (module to import, package to pip install)
TRACKERS: dict[str, tuple[str, str]] = {
    "azure_ml": ("azureml.core", "azureml-core"),
    "clearml": ("clearml", "clearml"),
    "codecarbon": ("codecarbon", "codecarbon"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "dagshub": ("dagshub", "dagshub"),
    "dvclive": ("dvclive", "dvclive"),
    "flyte": ("flytekit", "flytekit"),
    "kubeflow": ("kubeflow", "kubeflow"),
    "mlflow": ("mlflow", "mlflow"),
    "neptune": ("neptune", "neptune"),
    "swanlab": ("swanlab", "swanlab"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "trackio": ("trackio", "trackio"),
    "wandb": ("wandb", "wandb"),
}


def check_trackers(names: list[str]) -> None:
    """Raise a `UserError` for a `report_to` entry that is unknown or whose package is not installed."""
    for name in names:
        if name in ("all", "none"):
            continue
        if name not in TRACKERS:
            close = difflib.get_close_matches(name, list(TRACKERS), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(TRACKERS)}"
            raise UserError(f"report_to: unknown tracker {name!r}; {hint}")
        module, package = TRACKERS[name]
        if not _importable(module) and not (name == "tensorboard" and _importable("tensorboardX")):
            raise UserError(f"report_to: tracker {name!r} needs the Python package {package!r}: pip install {package} "
                            f"(or take {name} out of report_to)")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False
