"""A fake controller with a scheduled compression rate and deterministic train/validate functions."""

from __future__ import annotations

import torch

from nncompress.training.controller import CompressionStage
from nncompress.training.schedulers import BaseCompressionScheduler


class FakeScheduler(BaseCompressionScheduler):
    def __init__(self, ctrl: FakeController, schedule: list[float]):
        super().__init__()
        self.ctrl, self.schedule = ctrl, schedule

    def _update(self, reinit: bool) -> None:
        if reinit and self.schedule:
            self.ctrl._rate = self.schedule[min(self.current_epoch, len(self.schedule) - 1)]


class FakeController:
    """Stands for a filter pruning controller: a settable rate, a schedule, stages, state."""

    name = "filter_pruning"

    def __init__(self, schedule=(), target: float = 0.3, stages=None):
        self._rate = 0.0
        self.target = target
        self.stages = stages  # epoch -> stage override (early exit tests)
        self.scheduler = FakeScheduler(self, list(schedule))
        self.rates_set: list[float] = []

    @property
    def compression_rate(self) -> float:
        return self._rate

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.rates_set.append(value)
        self._rate = value

    def disable_scheduler(self) -> None:
        self.scheduler.disable()

    def compression_stage(self) -> CompressionStage:
        if self.stages is not None:
            return CompressionStage(self.stages[max(self.scheduler.current_epoch + 1, 0)])
        if self._rate <= 0:
            return CompressionStage.UNCOMPRESSED
        return CompressionStage.FULLY_COMPRESSED if self._rate >= self.target else CompressionStage.PARTIALLY_COMPRESSED

    def get_state(self) -> dict:
        return {self.name: {"rate": self._rate}}

    def load_state(self, state: dict) -> None:
        self._rate = state[self.name]["rate"]

    def get_compression_state(self) -> dict:
        return {"builder_state": {self.name: {}}, "ctrl_state": self.get_state()}


class Trainer:
    """``train`` writes the epoch number into the model's weight (so the restored state is visible);
    ``validate`` returns ``curve[epoch]`` or ``accuracy_of(rate)``."""

    def __init__(self, ctrl: FakeController, curve=None, accuracy_of=None):
        self.ctrl, self.curve, self.accuracy_of = ctrl, curve, accuracy_of
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.trained_epochs: list[int] = []
        self.lrs: list[float] = []

    def train(self, compression_ctrl, model, epoch, optimizer=None, **kwargs):
        assert compression_ctrl is self.ctrl and model is self.model
        self.trained_epochs.append(epoch)
        if optimizer is not None:
            self.lrs.append(optimizer.param_groups[0]["lr"])
        with torch.no_grad():
            model.weight.fill_(len(self.trained_epochs))

    def validate(self, model, epoch):
        if self.curve is not None:
            return self.curve[epoch]
        return self.accuracy_of(self.ctrl.compression_rate)

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.1), None

    def weight(self) -> float:
        return float(self.model.weight.detach())
