"""Training-time compression inside Hugging Face ``transformers.Trainer``.

Importing ``nncompress`` never imports transformers; importing this module does (a clear
``nncompress.errors.ModuleNotFoundError`` when it is not installed).

- ``CompressionCallback(compression_ctrl, export_path=None)``: a ``TrainerCallback`` that calls
  ``compression_ctrl.scheduler.epoch_step()`` at the start of every epoch and ``scheduler.step()`` before
  every optimizer step, and at the end of training writes ``compression_ctrl.export_model(export_path)``
  (ONNX, or OpenVINO IR for ``.xml``).
- ``CompressionTrainer(..., compression_ctrl=ctrl, export_path=None)``: a ``Trainer`` whose loss is the
  task loss plus ``compression_ctrl.loss()`` (RB sparsity, pruning, knowledge distillation terms), with
  the callback added; its logs carry ``compression_loss`` (and ``compression_rate`` where the algorithm
  has one). ``compression_trainer(cls)`` makes the same from any ``Trainer`` subclass (e.g.
  ``Seq2SeqTrainer``).

A callback cannot change the loss a Trainer optimises, hence the subclass; with the callback alone
(a Trainer of your own), add ``compression_ctrl.loss()`` in your ``compute_loss``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nncompress.errors import ModuleNotFoundError, ValidationError

try:
    import transformers
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "nncompress.integrations.transformers needs the transformers package: pip install transformers"
    ) from _exc

__all__ = ["CompressionCallback", "CompressionTrainer", "compression_trainer"]


def _check_ctrl(ctrl: Any) -> None:
    if not all(hasattr(ctrl, name) for name in ("loss", "scheduler", "export_model")):
        raise ValidationError(
            "compression_ctrl must be the controller create_compressed_model returns (with loss(), scheduler "
            f"and export_model()); got {type(ctrl).__name__}"
        )


def _save_format(path: Path) -> str:
    return "openvino" if path.suffix == ".xml" else "onnx"


class CompressionCallback(transformers.TrainerCallback):
    """Steps the compression scheduler, logs the compression loss and exports at the end of training."""

    def __init__(self, compression_ctrl: Any, export_path: str | Path | None = None,
                 save_format: str | None = None, log_statistics: bool = True):
        _check_ctrl(compression_ctrl)
        self.ctrl = compression_ctrl
        self.export_path = None if export_path is None else Path(export_path)
        self.save_format = save_format
        self.log_statistics = log_statistics
        self.exported: Path | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.ctrl.scheduler.epoch_step()

    def on_step_begin(self, args, state, control, **kwargs):
        self.ctrl.scheduler.step()

    def compression_logs(self) -> dict[str, float]:
        """The compression loss and, where the algorithm has one, the compression rate (for the Trainer's logs)."""
        loss = self.ctrl.loss()
        logs = {"compression_loss": float(loss.detach() if hasattr(loss, "detach") else loss)}
        try:
            logs["compression_rate"] = float(self.ctrl.compression_rate)
        except (ValidationError, TypeError, AttributeError):  # an algorithm without a compression rate
            pass
        return logs

    def on_train_end(self, args, state, control, **kwargs):
        if self.export_path is None or not state.is_world_process_zero:
            return
        self.export_path.parent.mkdir(parents=True, exist_ok=True)
        fmt = self.save_format or _save_format(self.export_path)
        self.exported = Path(self.ctrl.export_model(self.export_path, save_format=fmt))


def compression_trainer(trainer_cls: type = transformers.Trainer) -> type:
    """A subclass of ``trainer_cls`` taking ``compression_ctrl=`` and ``export_path=``: its loss adds
    ``compression_ctrl.loss()`` and a ``CompressionCallback`` steps the scheduler and exports."""

    class _CompressionTrainer(trainer_cls):
        def __init__(self, *args, compression_ctrl: Any, export_path: str | Path | None = None, **kwargs):
            _check_ctrl(compression_ctrl)
            super().__init__(*args, **kwargs)
            self.compression_ctrl = compression_ctrl
            self.compression_callback = CompressionCallback(compression_ctrl, export_path)
            self.add_callback(self.compression_callback)

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if self.compression_callback.log_statistics:
                logs = {**logs, **self.compression_callback.compression_logs()}
            super().log(logs, *args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            loss, outputs = result if return_outputs else (result, None)
            loss = loss + self.compression_ctrl.loss().to(loss.device)
            return (loss, outputs) if return_outputs else loss

    _CompressionTrainer.__name__ = _CompressionTrainer.__qualname__ = f"Compression{trainer_cls.__name__}"
    return _CompressionTrainer


CompressionTrainer = compression_trainer(transformers.Trainer)
