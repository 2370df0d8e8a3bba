"""Callbacks for the resume tests: the process SIGKILLs itself (no cleanup at all) after a given training step, or
while it saves a checkpoint."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(Callback):
    """SIGKILLs the process in the middle of saving a checkpoint at ``step`` or later: after the checkpoint's bytes
    are written to the temporary file, before it is renamed into place."""

    def __init__(self, step: int):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step >= self.step:
            os.replace = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
