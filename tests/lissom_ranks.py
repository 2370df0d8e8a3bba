"""A callback for the LISSOM DDP test: each process saves its weights and what it trained on."""

import lightning.pytorch as pl
import torch


class SaveRankState(pl.Callback):
    def __init__(self):
        self.image_sums: list[float] = []
        self.start: dict | None = None

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.image_sums.append(float(batch[0].sum()))

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        torch.save({"start": self.start, "end": state, "image_sums": self.image_sums},
                   f"rank{trainer.global_rank}.pt")
