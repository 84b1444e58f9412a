"""Compression controllers: what ``create_compressed_model`` returns next to the model.

Importing this module does not import torch. ``CompressionAlgorithmController`` is the protocol every
algorithm's controller follows (NNCF 2.x's ``CompressionAlgorithmController``); several algorithms give a
``CompositeCompressionAlgorithmController`` that sums losses, steps all schedulers and merges statistics.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Any

from nncompress.errors import ValidationError
from nncompress.training.schedulers import BaseCompressionScheduler


class CompressionStage(IntEnum):
    """How far compression has gone (NNCF's ``nncf.api.compression.CompressionStage``)."""

    UNCOMPRESSED = 0
    PARTIALLY_COMPRESSED = 1
    FULLY_COMPRESSED = 2


def combine_stages(a: CompressionStage, b: CompressionStage) -> CompressionStage:
    """Two algorithms' stages combined: equal stays, any mix is PARTIALLY_COMPRESSED."""
    return CompressionStage(a) if a == b else CompressionStage.PARTIALLY_COMPRESSED


class Statistics:
    """Per-algorithm tables; ``to_str()`` renders them as text (a ``rich`` table)."""

    def __init__(self, tables: list[tuple[str, list[tuple[str, str]]]]):
        self.tables = tables  # [(algorithm name, [(statistic, value), ...]), ...]

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {name: dict(rows) for name, rows in self.tables}

    def to_str(self) -> str:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=100, record=True, force_terminal=False, color_system=None)
        with console.capture() as capture:
            for name, rows in self.tables:
                table = Table(title=f"Statistics of the {name} algorithm")
                table.add_column("Statistic")
                table.add_column("Value", justify="right")
                for key, value in rows:
                    table.add_row(key, value)
                console.print(table)
        return capture.get()

    def __str__(self) -> str:
        return self.to_str()


class CompressionAlgorithmController:
    """One algorithm's controller. Subclasses fill in the algorithm-specific parts."""

    name = "compression"
    # A composite strips its children in ascending priority, whatever the config's list order: masks are
    # baked into weights first (sparsity 10), channels removed next (pruning 20, slicing the per-channel
    # parameters of hooks left on the shrunk weights), quantizers converted last (quantization 50).
    strip_priority = 50

    def __init__(self, model: Any, scheduler: BaseCompressionScheduler | None = None):
        self._model = model
        self._scheduler = scheduler or BaseCompressionScheduler()
        self.example_input: Any = None  # the capture's model input item (export traces with it)

    @property
    def model(self) -> Any:
        return self._model

    @property
    def scheduler(self) -> BaseCompressionScheduler:
        return self._scheduler

    def loss(self) -> Any:
        """The algorithm's loss term: a zero tensor on the model's device by default."""
        import torch

        from nncompress.backends.torch.inputs import model_device

        return torch.zeros((), device=model_device(self._model) or "cpu")

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        return Statistics([(self.name, [])])

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    @property
    def compression_rate(self) -> float:
        raise ValidationError(f"the {self.name} algorithm has no compression rate")

    def disable_scheduler(self) -> None:
        self._scheduler.disable()

    def quantizers(self) -> dict[str, Any]:
        return {}

    def distributed(self) -> None:
        """Call after wrapping the model in DistributedDataParallel."""

    def initialize(self, data_loader: Any) -> None:
        """Data-driven initialisation with ``data_loader`` (nothing by default)."""

    def builder_state(self) -> dict[str, Any]:
        return {}

    def get_state(self) -> dict[str, Any]:
        return {self.name: {"scheduler_state": self._scheduler.get_state(), "loss_state": None,
                            "compression_stage": int(self.compression_stage())}}

    def load_state(self, state: dict[str, Any]) -> None:
        mine = state.get(self.name) if isinstance(state, dict) else None
        if mine is None:
            raise ValidationError(
                f"the controller state has no entry for the {self.name!r} algorithm; it has {sorted(state or {})}"
            )
        self._scheduler.load_state(mine["scheduler_state"])

    def get_compression_state(self) -> dict[str, Any]:
        """``{"builder_state": ..., "ctrl_state": ...}``: pass it to ``create_compressed_model`` to resume."""
        return {"builder_state": {self.name: self.builder_state()}, "ctrl_state": self.get_state()}

    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        return model

    def strip(self, do_copy: bool = True) -> Any:
        """The model without training machinery, computing what the compressed model computes."""
        return self.strip_model(self._model, do_copy)

    def prepare_for_export(self) -> None:
        """Nothing by default (pruning propagates masks here)."""

    def export_model(self, save_path: str | Path, save_format: str = "onnx", input_names: Any = None,
                     output_names: Any = None, model_args: Any = None) -> Path:
        """Write the stripped model as standard ONNX QDQ ("onnx" or "onnx_<opset>", opset >= 13) or
        OpenVINO IR ("openvino")."""
        from nncompress.training.export import export_stripped

        self.prepare_for_export()
        return export_stripped(self.strip(do_copy=True), save_path, save_format, model_args or self.example_input,
                               input_names, output_names)


class CompositeCompressionAlgorithmController(CompressionAlgorithmController):
    """Several algorithms on one model: losses summed, schedulers stepped together, stages combined."""

    name = "composite"

    def __init__(self, model: Any, children: list[CompressionAlgorithmController]):
        super().__init__(model, CompositeScheduler([c.scheduler for c in children]))
        self.children = children

    def loss(self) -> Any:
        total = self.children[0].loss()
        for child in self.children[1:]:
            total = total + child.loss()
        return total

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        tables = []
        for child in self.children:
            tables.extend(child.statistics(quickly_collected_only).tables)
        return Statistics(tables)

    def compression_stage(self) -> CompressionStage:
        stage = self.children[0].compression_stage()
        for child in self.children[1:]:
            stage = combine_stages(stage, child.compression_stage())
        return stage

    def quantizers(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for child in self.children:
            found.update(child.quantizers())
        return found

    def distributed(self) -> None:
        for child in self.children:
            child.distributed()

    def initialize(self, data_loader: Any) -> None:
        for child in self.children:
            child.initialize(data_loader)

    def disable_scheduler(self) -> None:
        for child in self.children:
            child.disable_scheduler()

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for child in self.children:
            state.update(child.get_state())
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        for child in self.children:
            child.load_state(state)

    def get_compression_state(self) -> dict[str, Any]:
        builder_state = {child.name: child.builder_state() for child in self.children}
        return {"builder_state": builder_state, "ctrl_state": self.get_state()}

    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        ordered = sorted(self.children, key=lambda child: child.strip_priority)
        for index, child in enumerate(ordered):
            model = child.strip_model(model, do_copy=do_copy and index == 0)
        return model

    def prepare_for_export(self) -> None:
        for child in self.children:
            child.prepare_for_export()


class CompositeScheduler(BaseCompressionScheduler):
    """Steps every child scheduler; its counters are the first child's."""

    def __init__(self, children: list[BaseCompressionScheduler]):
        super().__init__()
        self.children = children

    def step(self, next_step: int | None = None) -> None:
        for child in self.children:
            child.step(next_step)
        self.current_step = self.children[0].current_step

    def epoch_step(self, next_epoch: int | None = None) -> None:
        for child in self.children:
            child.epoch_step(next_epoch)
        self.current_epoch = self.children[0].current_epoch

    def disable(self) -> None:
        for child in self.children:
            child.disable()

    def get_state(self) -> dict[str, Any]:
        return {"children": [child.get_state() for child in self.children]}

    def load_state(self, state: dict[str, Any]) -> None:
        for child, sub in zip(self.children, state["children"]):
            child.load_state(sub)
