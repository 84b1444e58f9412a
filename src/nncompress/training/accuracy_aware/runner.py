"""What both accuracy-aware loops share: calling the user's functions, the optimizer and its learning rate,
the per-epoch record, the best checkpoint and the logs. Framework specifics stay in the user's functions
and in the controller's ``get_state``/``load_state``."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nncompress.errors import ValidationError
from nncompress.log import logger
from nncompress.training.accuracy_aware.log import EpochRecord, write_logs
from nncompress.training.accuracy_aware.params import AccuracyAwareParams

# controllers whose compression_rate the adaptive loop may set (const sparsity has fixed masks)
ADAPTIVE_ALGORITHMS = ("magnitude_sparsity", "rb_sparsity", "filter_pruning")


def adaptive_controllers(ctrl: Any) -> list[Any]:
    """The controllers in ``ctrl`` (itself or a composite's children) with a settable compression rate."""
    children = getattr(ctrl, "children", None) or [ctrl]
    return [c for c in children if getattr(c, "name", None) in ADAPTIVE_ALGORITHMS]


def call_with_supported(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` passing only the keywords ``fn`` accepts (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return fn(*args, **kwargs)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fn(*args, **{k: v for k, v in kwargs.items() if k in names})


class TrainingRunner:
    """Runs one epoch or one validation on request and keeps the record, the best state and the logs."""

    def __init__(self, ctrl: Any, params: AccuracyAwareParams, uncompressed_accuracy: float, verbose: bool = True,
                 dump_checkpoints: bool = True):
        if isinstance(uncompressed_accuracy, bool) or not isinstance(uncompressed_accuracy, (int, float)) or \
                not math.isfinite(uncompressed_accuracy):
            raise ValidationError(f"uncompressed_model_accuracy must be a finite number; got {uncompressed_accuracy!r}")
        self.ctrl, self.params = ctrl, params
        self.uncompressed_accuracy = float(uncompressed_accuracy)
        self.maximal_drop = params.maximal_drop(uncompressed_accuracy)
        self.verbose, self.dump_checkpoints = verbose, dump_checkpoints
        self.records: list[EpochRecord] = []
        self.epochs_done = 0
        self.optimizer = self.lr_scheduler = None
        self.best: tuple[EpochRecord, dict, dict] | None = None  # (record, model state, controller state)

    def bind(self, model: Any, train_epoch_fn: Callable, validate_fn: Callable, configure_optimizers_fn=None,
             dump_checkpoint_fn=None, load_checkpoint_fn=None, early_stopping_fn=None, tensorboard_writer=None,
             log_dir=None, update_learning_rate_fn=None) -> None:
        for name, fn in (("train_epoch_fn", train_epoch_fn), ("validate_fn", validate_fn)):
            if not callable(fn):
                raise ValidationError(f"{name} must be callable; got {type(fn).__name__}")
        self.model, self.train_epoch_fn, self.validate_fn = model, train_epoch_fn, validate_fn
        self.configure_optimizers_fn, self.update_learning_rate_fn = configure_optimizers_fn, update_learning_rate_fn
        self.dump_checkpoint_fn, self.load_checkpoint_fn = dump_checkpoint_fn, load_checkpoint_fn
        self.early_stopping_fn, self.tensorboard_writer = early_stopping_fn, tensorboard_writer
        self.log_dir = None if log_dir is None else Path(log_dir)

    # --- training ---------------------------------------------------------------------------------
    def reset_training(self, lr_scale: float = 1.0) -> None:
        """A fresh optimizer and LR scheduler from ``configure_optimizers_fn``, learning rates times ``lr_scale``."""
        if self.configure_optimizers_fn is None:
            self.optimizer = self.lr_scheduler = None
            return
        made = self.configure_optimizers_fn()
        if not isinstance(made, tuple) or len(made) != 2:
            raise ValidationError(
                "configure_optimizers_fn must return (optimizer, lr_scheduler) (lr_scheduler may be None); got "
                f"{type(made).__name__}"
            )
        self.optimizer, self.lr_scheduler = made
        if lr_scale != 1.0:
            scale_learning_rate(self.optimizer, self.lr_scheduler, lr_scale)

    def train_epoch(self) -> None:
        """``scheduler.epoch_step()``, then the user's epoch; the user's function steps ``scheduler.step()``."""
        self.ctrl.scheduler.epoch_step()
        call_with_supported(self.train_epoch_fn, self.ctrl, self.model, epoch=self.epochs_done,
                            optimizer=self.optimizer, lr_scheduler=self.lr_scheduler)
        self.epochs_done += 1

    def validate(self) -> float:
        value = call_with_supported(self.validate_fn, self.model, epoch=self.epochs_done)
        try:
            accuracy = float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"validate_fn must return the metric as a number; got {value!r}") from None
        if not math.isfinite(accuracy):
            raise ValidationError(f"validate_fn returned {accuracy}; the metric must be finite")
        self._step_learning_rate(accuracy)
        return accuracy

    def _step_learning_rate(self, accuracy: float) -> None:
        """Once per trained epoch: ``update_learning_rate_fn(lr_scheduler, epoch, accuracy)`` when given, else
        ``lr_scheduler.step()`` (``step(accuracy)`` for ReduceLROnPlateau-style schedulers)."""
        if self.epochs_done == 0:
            return
        if self.update_learning_rate_fn is not None:
            self.update_learning_rate_fn(self.lr_scheduler, self.epochs_done, accuracy)
        elif self.lr_scheduler is not None:
            wants_metric = "metrics" in inspect.signature(self.lr_scheduler.step).parameters
            self.lr_scheduler.step(accuracy) if wants_metric else self.lr_scheduler.step()

    def within_budget(self, accuracy: float) -> bool:
        return self.uncompressed_accuracy - accuracy <= self.maximal_drop + 1e-12

    def stop_requested(self, accuracy: float) -> bool:
        return self.early_stopping_fn is not None and bool(self.early_stopping_fn(accuracy))

    # --- record, best state, logs -----------------------------------------------------------------
    def record(self, phase: str, accuracy: float, rate: float | None, step: float | None = None) -> EpochRecord:
        drop = self.uncompressed_accuracy - accuracy
        base = abs(self.uncompressed_accuracy) or 1.0
        lr = None
        if self.optimizer is not None and getattr(self.optimizer, "param_groups", None):
            lr = float(self.optimizer.param_groups[0]["lr"])
        rec = EpochRecord(self.epochs_done, phase, rate, accuracy, drop, 100.0 * drop / base,
                          self.within_budget(accuracy), int(self.ctrl.compression_stage()), lr, step)
        self.records.append(rec)
        if self.verbose:
            rate_text = "" if rate is None else f", compression rate {rate:.4f}"
            logger.info("accuracy-aware training, epoch %d (%s): accuracy %.4f (drop %+.4f, budget %.4f)%s",
                        rec.epoch, phase, accuracy, drop, self.maximal_drop, rate_text)
        if self.tensorboard_writer is not None:
            self.tensorboard_writer.add_scalar("compression/accuracy_aware/accuracy", accuracy, rec.epoch)
            if rate is not None:
                self.tensorboard_writer.add_scalar("compression/accuracy_aware/compression_rate", rate, rec.epoch)
        return rec

    def consider(self, rec: EpochRecord, better: Callable[[EpochRecord, EpochRecord], bool]) -> bool:
        """Keep the current model as the best when ``better(rec, best_record)``; True when it was kept."""
        if self.best is not None and not better(rec, self.best[0]):
            return False
        state = {k: v.detach().clone() if hasattr(v, "detach") else copy.deepcopy(v)
                 for k, v in self.model.state_dict().items()}
        self.best = (rec, state, copy.deepcopy(self.ctrl.get_state()))
        self._dump("best")
        return True

    def _dump(self, tag: str) -> None:
        if self.log_dir is None or not self.dump_checkpoints:
            return
        if self.dump_checkpoint_fn is not None:
            self.dump_checkpoint_fn(self.model, self.ctrl, self, self.log_dir)
            return
        import torch

        self.log_dir.mkdir(parents=True, exist_ok=True)
        rec = self.best[0]
        torch.save({"epoch": rec.epoch, "accuracy": rec.accuracy, "compression_rate": rec.compression_rate,
                    "state_dict": self.best[1], "compression_state": self.ctrl.get_compression_state()},
                   self.log_dir / f"acc_aware_checkpoint_{tag}.pth")

    def restore_best(self) -> EpochRecord | None:
        """Load the best state back into the model and the controller; its record."""
        if self.best is None:
            return None
        rec, model_state, ctrl_state = self.best
        if self.load_checkpoint_fn is not None and self.log_dir is not None:
            self.load_checkpoint_fn(self.model, self.log_dir / "acc_aware_checkpoint_best.pth")
        else:
            self.model.load_state_dict(model_state)
            self.ctrl.load_state(ctrl_state)
        return rec

    def write_logs(self, summary: dict) -> dict[str, Path]:
        if self.log_dir is None or not self.records:
            return {}
        return write_logs(self.records, self.log_dir, self.uncompressed_accuracy, self.maximal_drop, summary)


def scale_learning_rate(optimizer: Any, lr_scheduler: Any, factor: float) -> None:
    """Multiply every param group's ``lr`` (and ``initial_lr``) and the scheduler's ``base_lrs`` by ``factor``."""
    for group in getattr(optimizer, "param_groups", None) or []:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    base_lrs = getattr(lr_scheduler, "base_lrs", None)
    if isinstance(base_lrs, list):
        lr_scheduler.base_lrs = [lr * factor for lr in base_lrs]
