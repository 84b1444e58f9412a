"""cli.models and cli.output: reading each kind of model, and where results may be written."""

from __future__ import annotations

from pathlib import Path

import pytest

from nncompress.cli.main import parse
from nncompress.cli.models import LoadedModel, load_model
from nncompress.cli.output import check_output, dynamic_axes
from nncompress.errors import InvalidPathError, UnsupportedModelError, ValidationError

NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = torch.nn.Linear(width, 3)

    def forward(self, x):
        return self.fc(x)
"""


def _args(model: Path, *options: str):
    return parse(["compress-weights", str(model), "-o", "out.xml", *options])


def test_state_dict_checkpoint_with_a_model_class_from_a_file(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    source = torch.nn.Sequential()
    source.add_module("fc", torch.nn.Linear(6, 3))
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = load_model(_args(tmp_path / "ckpt.pt", "--model-class", f"{tmp_path / 'net.py'}:Net",
                              "--model-args", '{"width": 6}'))
    assert loaded.backend == "torch" and loaded.input_names == ["x"]
    assert torch.equal(loaded.model.fc.weight, source.fc.weight)


def test_checkpoint_needs_a_class_or_an_explicit_unsafe_pickle(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    torch.save(module, tmp_path / "whole.pt")
    with pytest.raises(ValidationError, match="--model-class.*weights_only=True.*--unsafe-pickle"):
        load_model(_args(tmp_path / "whole.pt"))
    loaded = load_model(_args(tmp_path / "whole.pt", "--unsafe-pickle"))
    assert torch.equal(loaded.model[0].weight, module[0].weight)
    torch.save({"w": torch.ones(2)}, tmp_path / "sd.pt")
    with pytest.raises(UnsupportedModelError, match="holds a dict, not a pickled torch.nn.Module"):
        load_model(_args(tmp_path / "sd.pt", "--unsafe-pickle"))
    with pytest.raises(ValidationError, match="--model-args must be a JSON object"):
        load_model(_args(tmp_path / "sd.pt", "--model-class", "torch.nn:Linear", "--model-args", "[1]"))


@pytest.mark.parametrize("name, error, fragment", [
    ("missing.onnx", InvalidPathError, "does not exist"),
    ("model.tflite", ValidationError, "suffix '.tflite'"),
    ("broken.onnx", UnsupportedModelError, "not a readable ONNX file"),
    ("lonely.xml", InvalidPathError, "needs its weights file"),
    ("folder", InvalidPathError, "has no config.json"),
])
def test_unreadable_models_name_the_path(tmp_path, name, error, fragment):
    pytest.importorskip("onnx")
    (tmp_path / "model.tflite").write_bytes(b"x")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf at all")
    (tmp_path / "lonely.xml").write_text("<net/>")
    (tmp_path / "folder").mkdir()
    with pytest.raises(error, match=fragment):
        load_model(_args(tmp_path / name))


def test_output_suffix_rules(tmp_path):
    onnx_model = LoadedModel(None, "onnx", tmp_path / "m.onnx")
    hf_model = LoadedModel(None, "torch", tmp_path / "hf", hf_folder=tmp_path / "hf")
    assert check_output(onnx_model, str(tmp_path / "o.xml"), weights_only=False).suffix == ".xml"
    assert check_output(hf_model, str(tmp_path / "out"), weights_only=True).name == "out"
    assert check_output(hf_model, str(tmp_path / "o.pt"), weights_only=True).suffix == ".pt"
    cases = [
        (onnx_model, "o.bin", True, "suffix '.bin'"),
        (onnx_model, "out", True, "has no suffix"),
        (onnx_model, "o.pt", True, "PyTorch state_dict"),
        (hf_model, "out", False, "activation quantizers"),
        (onnx_model, "m.onnx", True, "never overwritten"),
        (onnx_model, "nofolder/o.onnx", True, "does not exist"),
    ]
    for model, output, weights_only, fragment in cases:
        with pytest.raises(ValidationError, match=fragment):
            check_output(model, str(tmp_path / output), weights_only)


def test_token_inputs_export_with_dynamic_sequence_axes():
    np = pytest.importorskip("numpy")
    item = {"input_ids": np.zeros((1, 5)), "attention_mask": np.zeros((1, 5))}
    assert dynamic_axes(item) == {"input_ids": {0: "batch", 1: "sequence"},
                                  "attention_mask": {0: "batch", 1: "sequence"}}
    assert dynamic_axes(np.zeros((1, 3, 8, 8))) is None
