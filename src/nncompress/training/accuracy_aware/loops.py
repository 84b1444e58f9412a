"""The two accuracy-aware training loops (NNCF's ``early_exit`` and ``adaptive_compression_level``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nncompress.errors import ValidationError
from nncompress.log import logger
from nncompress.training.accuracy_aware.log import EpochRecord
from nncompress.training.accuracy_aware.params import AccuracyAwareParams
from nncompress.training.accuracy_aware.runner import ADAPTIVE_ALGORITHMS, TrainingRunner, adaptive_controllers
from nncompress.training.controller import CompressionStage

RATE_DECIMALS = 10  # compression rates are rounded so that 0.3 + 0.1 is logged and compared as 0.4


@dataclass(frozen=True)
class TrainingLoopStatistics:
    """The outcome of ``run``: the returned (best) model's figures and why the loop stopped."""

    uncompressed_accuracy: float
    compressed_accuracy: float
    accuracy_drop: float
    relative_accuracy_drop: float  # percent
    compression_rate: float | None
    within_budget: bool
    best_epoch: int
    epochs_trained: int
    stop_reason: str


def _stage_rule(rec: EpochRecord, best: EpochRecord) -> bool:
    """§7: a higher compression stage wins; at equal stage, a higher accuracy."""
    return rec.compression_stage > best.compression_stage or (
        rec.compression_stage == best.compression_stage and rec.accuracy > best.accuracy)


def _rate_key(rec: EpochRecord) -> tuple:
    rate = rec.compression_rate or 0.0
    return (True, rate, rec.accuracy) if rec.within_budget else (False, rec.accuracy, rate)


def _rate_rule(rec: EpochRecord, best: EpochRecord) -> bool:
    """Within budget beats outside it; within budget the higher compression rate, then the higher accuracy;
    outside it the higher accuracy, then the higher rate."""
    return _rate_key(rec) > _rate_key(best)


class _Loop:
    mode = ""

    def __init__(self, ctrl: Any, params: AccuracyAwareParams, uncompressed_model_accuracy: float,
                 verbose: bool = True, dump_checkpoints: bool = True):
        self.ctrl, self.params = ctrl, params
        self.runner = TrainingRunner(ctrl, params, uncompressed_model_accuracy, verbose, dump_checkpoints)
        self._statistics: TrainingLoopStatistics | None = None

    @property
    def statistics(self) -> TrainingLoopStatistics:
        if self._statistics is None:
            raise ValidationError("the loop has no statistics before run() has finished")
        return self._statistics

    @property
    def records(self) -> list[EpochRecord]:
        """Every validation of the last ``run``, in order."""
        return list(self.runner.records)

    def run(self, model: Any, train_epoch_fn, validate_fn, configure_optimizers_fn=None, dump_checkpoint_fn=None,
            load_checkpoint_fn=None, early_stopping_fn=None, tensorboard_writer=None, log_dir=None,
            update_learning_rate_fn=None) -> Any:
        """Train ``model`` (the compressed model of the loop's controller) and return it at its best state."""
        self.runner.bind(model, train_epoch_fn, validate_fn, configure_optimizers_fn, dump_checkpoint_fn,
                         load_checkpoint_fn, early_stopping_fn, tensorboard_writer, log_dir, update_learning_rate_fn)
        reason = self._search()
        best = self.runner.restore_best()
        self._statistics = _statistics(self.runner, best, reason)
        self.runner.write_logs({"mode": self.mode, "budget": self.params.budget_text(),
                                "result": self._statistics.__dict__})
        logger.info("accuracy-aware training (%s) stopped: %s; returning epoch %d: accuracy %.4f, drop %+.4f%s",
                    self.mode, reason, best.epoch, best.accuracy, best.accuracy_drop,
                    "" if best.compression_rate is None else f", compression rate {best.compression_rate:.4f}")
        return model

    def _search(self) -> str:
        raise NotImplementedError


def _statistics(runner: TrainingRunner, best: EpochRecord, reason: str) -> TrainingLoopStatistics:
    return TrainingLoopStatistics(runner.uncompressed_accuracy, best.accuracy, best.accuracy_drop,
                                  best.relative_drop_percent, best.compression_rate, best.within_budget,
                                  best.epoch, runner.epochs_done, reason)


def _current_rate(ctrl: Any) -> float | None:
    found = adaptive_controllers(ctrl)
    return round(float(found[0].compression_rate), RATE_DECIMALS) if len(found) == 1 else None


class EarlyExitCompressionTrainingLoop(_Loop):
    """Validate after initialisation and after every epoch; stop at the first fully compressed model within the
    budget, or after ``maximal_total_epochs``. Compression parameters are left to the algorithms' schedules.
    Returns the model of the epoch chosen by §7's rule (the stopping epoch when the budget was met)."""

    mode = "early_exit"

    def _search(self) -> str:
        runner = self.runner
        runner.reset_training()
        for epoch in range(self.params.maximal_total_epochs + 1):
            if epoch > 0:
                runner.train_epoch()
            accuracy = runner.validate()
            rec = runner.record("initial" if epoch == 0 else "fine_tuning", accuracy, _current_rate(self.ctrl))
            runner.consider(rec, _stage_rule)
            runner.write_logs({"mode": self.mode})
            if rec.within_budget and rec.compression_stage == CompressionStage.FULLY_COMPRESSED:
                return f"accuracy budget met at epoch {rec.epoch}"
            if runner.stop_requested(accuracy):
                return f"early_stopping_fn asked to stop at epoch {rec.epoch}"
        return f"maximal_total_epochs ({self.params.maximal_total_epochs}) reached without meeting the budget"


class AdaptiveCompressionTrainingLoop(_Loop):
    """Train ``initial_training_phase_epochs`` with the algorithm's schedule, then search the highest
    compression rate within the budget: the scheduler is disabled and the rate moves by a step (up when the
    last level met the budget, down when not); each level trains up to ``patience_epochs`` (fewer once the
    budget is met). When the direction changes the step shrinks by ``compression_rate_step_reduction_factor``
    and the learning rate by ``lr_reduction_factor``; the search ends when the step would fall below
    ``minimal_compression_rate_step``, the rate cannot move further, or ``maximal_total_epochs`` is spent.
    Returns the model at the highest compression rate that met the budget (ties: the higher accuracy)."""

    mode = "adaptive_compression_level"

    def __init__(self, ctrl: Any, params: AccuracyAwareParams, uncompressed_model_accuracy: float, **kwargs: Any):
        found = adaptive_controllers(ctrl)
        if len(found) != 1:
            names = [getattr(c, "name", type(c).__name__) for c in (getattr(ctrl, "children", None) or [ctrl])]
            raise ValidationError(
                "adaptive_compression_level needs exactly one algorithm with an adjustable compression rate "
                f"({', '.join(ADAPTIVE_ALGORITHMS)}) in the config; it has {names}. Use mode \"early_exit\" "
                "for the others"
            )
        self.rate_ctrl = found[0]
        super().__init__(ctrl, params, uncompressed_model_accuracy, **kwargs)
        self.visited_rates: list[float] = []  # the rates the search set, in order
        self.lr_scale = 1.0

    def _epoch(self, phase: str, step: float | None) -> EpochRecord:
        self.runner.train_epoch()
        rec = self.runner.record(phase, self.runner.validate(), self._rate(), step)
        self.runner.consider(rec, _rate_rule)
        self.runner.write_logs({"mode": self.mode})
        return rec

    def _rate(self) -> float:
        return round(float(self.rate_ctrl.compression_rate), RATE_DECIMALS)

    def _out_of_epochs(self) -> bool:
        return self.runner.epochs_done >= self.params.maximal_total_epochs

    def _search(self) -> str:
        p, runner = self.params, self.runner
        runner.reset_training()
        rec = runner.record("initial", runner.validate(), self._rate())
        runner.consider(rec, _rate_rule)
        for _ in range(p.initial_training_phase_epochs):
            if self._out_of_epochs():
                return f"maximal_total_epochs ({p.maximal_total_epochs}) spent in the initial training phase"
            rec = self._epoch("initial_training", None)
        self.ctrl.disable_scheduler()
        step, direction = p.initial_compression_rate_step, 0
        while True:
            wanted = 1 if rec.within_budget else -1
            if direction and wanted != direction:
                step *= p.compression_rate_step_reduction_factor
                if step < p.minimal_compression_rate_step - 1e-12:
                    return f"the compression rate step fell below minimal_compression_rate_step ({step:.4g})"
                self.lr_scale *= p.lr_reduction_factor
            direction = wanted
            rate = round(min(max(self._rate() + direction * step, 0.0), p.maximal_compression_rate), RATE_DECIMALS)
            if rate == self._rate():
                return f"the compression rate cannot move {'up' if direction > 0 else 'down'} from {rate:g}"
            if self._out_of_epochs():
                return f"maximal_total_epochs ({p.maximal_total_epochs}) reached"
            rec = self._train_level(rate, step)

    def _train_level(self, rate: float, step: float) -> EpochRecord:
        """Set ``rate``, restart the optimizer at the reduced learning rate, train up to ``patience_epochs``."""
        self.rate_ctrl.compression_rate = rate
        self.visited_rates.append(rate)
        self.runner.reset_training(self.lr_scale)
        for _ in range(self.params.patience_epochs):
            rec = self._epoch("search", step)
            if rec.within_budget or self._out_of_epochs():
                break
        return rec
