"""Keras/Lightning-style callbacks for the training loop.

Each callback is a small class with hooks named for the moment they run (``HOOKS``) and a
``state_dict`` / ``load_state_dict`` so a resumed run restores it. A callback sees the run
through ``RunView`` (``self.run``: the evaluated weights, the optimizer, the epoch, the
rank, ...), not the whole recipe, and talks back only through ``run.stop_training``,
``run.failure`` and ``run.restored_epoch``; the run reduces the stop flag across ranks, so
no worker stops alone. ``CallbackList`` calls the hooks (an unknown hook name is an
AttributeError, never a silent no-op) and saves each stateful callback's state under its
``state_key``. ``Monitor`` is the one "did the monitored figure improve" rule that
EarlyStopping and ModelCheckpoint share.
"""

from training.callbacks.base import HOOKS, Callback, CallbackList, RunView
from training.callbacks.build import BUILTIN, LambdaCallback, build_callbacks
from training.callbacks.checkpoint import ModelCheckpoint
from training.callbacks.learning_rate import LearningRateMonitor, LearningRateScheduler
from training.callbacks.loggers import CSVLogger, ProgressLogger, TensorBoard
from training.callbacks.monitor import Mode, Monitor, Monitored, check_mode
from training.callbacks.stopping import EarlyStopping, TerminateOnNaN

__all__ = [
    "BUILTIN",
    "HOOKS",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateMonitor",
    "LearningRateScheduler",
    "Mode",
    "ModelCheckpoint",
    "Monitor",
    "Monitored",
    "ProgressLogger",
    "RunView",
    "TensorBoard",
    "TerminateOnNaN",
    "build_callbacks",
    "check_mode",
]
