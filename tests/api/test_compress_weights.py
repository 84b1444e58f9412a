"""``compress_weights``: layer selection, defaults, report, validation errors."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import CalibrationError, InvalidGroupSizeError, UnsupportedBackendError, ValidationError
from tests.weights.models import inputs, onnx_model, openvino_model

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

BACKENDS = {"onnx": onnx_model, "openvino": openvino_model}
OPENVINO_NAMES = {"fc2/WithoutBiases": "fc2", "logits": "head", "conv/WithoutBiases": "conv"}


def _rows(report) -> dict[str, str]:
    return {config: share for config, share, _ in report.rows()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_int8_asym_compresses_every_weight(backend):
    model = BACKENDS[backend]()
    nncf.compress_weights(model)
    report = nncf.last_report()
    assert _rows(report) == {"int8_asym, per-channel": "100% (5 / 5)"}
    assert set(report.layers) == {"embedding", "fc1", "fc2", "head", "conv"} or len(report.layers) == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_int4_keeps_embedding_conv_and_last_linear_in_backup(backend):
    model = BACKENDS[backend]()
    nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=16)
    report = nncf.last_report()
    layers = report.layers
    int4 = [name for name, config in layers.items() if config.startswith("int4_sym")]
    assert len(int4) == 2  # fc1, fc2; head is the last Linear
    assert sum(config.startswith("int8_asym") for config in layers.values()) == 3
    assert "ratio-defining" in report.table() and "int4_sym, group size 16" in str(report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_formats_defaults_and_backups(backend):
    """NNCF's defaults: FP4/FP8 back up in FP8_E4M3 (same group, per channel where it does not divide),
    MX formats in MXFP8_E4M3 (INT8_ASYM where 32 does not divide), NVFP4 in INT8_ASYM; CB4 per channel."""
    expected = {
        "fp4": {"fc1": "fp4, group size 64", "fc2": "fp4, group size 128", "head": "fp8_e4m3, group size 128",
                "embedding": "fp8_e4m3, per-channel", "conv": "fp8_e4m3, per-channel"},
        "mxfp4": {"fc1": "mxfp4, group size 32", "head": "mxfp8_e4m3, group size 32",
                  "embedding": "mxfp8_e4m3, group size 32", "conv": "int8_asym, per-channel"},
        "nvfp4": {"fc2": "nvfp4, group size 16", "head": "int8_asym, per-channel"},
        "cb4": {"fc2": "cb4_f8e4m3, per-channel", "embedding": "int8_asym, per-channel"},
        "fp8_e4m3": {"fc2": "fp8_e4m3, group size 128", "embedding": "fp8_e4m3, per-channel"},
    }
    for mode, layers in expected.items():
        model = BACKENDS[backend]()
        compressed = nncf.compress_weights(model, mode=mode)
        got = {OPENVINO_NAMES.get(k, k): v for k, v in nncf.last_report().layers.items()}
        assert {name: got[name] for name in layers} == layers, mode
        if backend == "onnx":
            import onnxruntime as ort

            run = ort.InferenceSession(compressed.SerializeToString(), providers=["CPUExecutionProvider"])
            reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            got, want = run.run(None, inputs())[0], reference.run(None, inputs())[0]
            assert np.abs(got - want).max() < 0.2 * np.abs(want).max(), mode


def test_all_layers_and_backup_none():
    nncf.compress_weights(onnx_model(), mode="int4_asym", group_size=16, all_layers=True, backup_mode="none")
    layers = nncf.last_report().layers
    assert sum(v.startswith("int4_asym") for v in layers.values()) == 4  # embedding + 3 linears
    assert sum(v.startswith("float") for v in layers.values()) == 1  # conv: backup NONE keeps it float


def test_ratio_counts_weight_elements():
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, ratio=0.5, all_layers=True)
    report = nncf.last_report()
    four = next(r for r in report.distribution if r.config.startswith("int4"))
    assert 0 < four.ratio_params <= 0.5 * report.ratio_params


def test_group_size_fallback_adjusts_and_reports():
    # hidden 64 is not divisible by 48: adjusted to the largest power of two <= 48 dividing it (32)
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=48, all_layers=True)
    report = nncf.last_report()
    assert any("does not divide" in note for note in report.notes)
    assert "int4_sym, group size 32" in _rows(report)


def test_group_size_error_names_valid_choices():
    advanced = nncf.AdvancedCompressionParameters(group_size_fallback_mode="error")
    with pytest.raises(InvalidGroupSizeError, match=r"Group sizes that divide all of them: .*32"):
        nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=48, advanced_parameters=advanced)


def test_group_size_ignore_keeps_float():
    advanced = nncf.AdvancedCompressionParameters(group_size_fallback_mode="ignore")
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=48, advanced_parameters=advanced)
    assert "float" in _rows(nncf.last_report())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "int8_asym", "ratio": 0.5}, "ratio cannot be used"),
        ({"mode": "int8_sym", "group_size": 64}, "group_size cannot be used"),
        ({"mode": "int8_asym", "all_layers": True}, "all_layers"),
        ({"mode": "int4_sym", "ratio": 1.5}, "between 0 and 1"),
        ({"mode": "int4_sym", "group_size": 0}, "positive integer"),
        ({"mode": "int5"}, "mode must be one of"),
        ({"mode": "mxfp4", "group_size": 64}, "groups of 32"),
        ({"mode": "int4_sym", "scale_estimation": True}, "need a calibration dataset"),
        ({"mode": "int4_sym", "gptq": True}, "need a calibration dataset"),
        ({"mode": "mxfp4", "awq": True}, "work with modes"),
        ({"mode": "nvfp4", "group_size": 32}, "groups of 16"),
        ({"mode": "mxfp8_e4m3", "group_size": 64}, "groups of 32"),
        ({"mode": "fp4", "scale_estimation": True, "dataset": nncf.Dataset([inputs()])}, "work with modes"),
        ({"mode": "int4_sym", "ratio": 0.5, "sensitivity_metric": "max_activation_variance"}, "needs a dataset"),
        ({"mode": "int4_sym", "subset_size": 0}, "subset_size"),
        ({"mode": "int4_sym", "backup_mode": "int2"}, "backup_mode must be one of"),
    ],
)
def test_invalid_arguments_name_valid_choices(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        nncf.compress_weights(onnx_model(), **kwargs)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("fmt", ["FQ", "FQ_LORA", "FQ_LORA_NLS"])
def test_fake_quantize_formats_are_for_pytorch_only(backend, fmt):
    value = nncf.CompressionFormat[fmt].value
    match = f"compression_format='{value}' makes trainable fake-quantized weights, which only PyTorch models have; a "
    with pytest.raises(UnsupportedBackendError, match=match + f"{backend} model takes compression_format='dequantize'"):
        nncf.compress_weights(BACKENDS[backend](), mode="int4_asym", group_size=16,
                              compression_format=nncf.CompressionFormat[fmt])


def test_nothing_to_compress():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValidationError, match="no weights to compress"):
        nncf.compress_weights(model)


def test_dataset_lacking_inputs():
    dataset = nncf.Dataset([{"ids": inputs()["ids"]}])  # no "image"
    with pytest.raises(CalibrationError, match="image"):
        nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, dataset=dataset, scale_estimation=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_model_is_not_modified(backend):
    model = BACKENDS[backend]()
    if backend == "onnx":
        before = model.SerializeToString()
        nncf.compress_weights(model, mode="int4_asym", group_size=16, all_layers=True)
        assert model.SerializeToString() == before
    else:
        ops = [(op.get_type_name(), op.get_friendly_name()) for op in model.get_ordered_ops()]
        nncf.compress_weights(model, mode="int4_asym", group_size=16, all_layers=True)
        assert [(op.get_type_name(), op.get_friendly_name()) for op in model.get_ordered_ops()] == ops


def test_ignored_scope_stays_float():
    scope = nncf.IgnoredScope(names=["fc1"])
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, ignored_scope=scope)
    report = nncf.last_report()
    assert report.layers["fc1"].startswith("float") and "fc1" in report.skipped


def test_verbose_prints_the_distribution(capsys):
    nncf.compress_weights(onnx_model(), mode="nf4", group_size=16, verbose=True)
    out = capsys.readouterr().out
    assert "bitwidth distribution" in out and "nf4, group size 16" in out


def test_outputs_close_to_float_model():
    import onnxruntime as ort

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, inputs())[0]

    model = onnx_model()
    reference = run(model)
    for mode, tolerance in (("int8_asym", 0.02), ("int4_asym", 0.2)):
        out = run(nncf.compress_weights(model, mode=mode, group_size=None if mode == "int8_asym" else 16))
        assert np.abs(out - reference).max() / np.abs(reference).max() < tolerance


def test_distribution_table_is_logged_and_can_be_silenced(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="nncompress"):
        nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16)
    assert "Statistics of the bitwidth distribution" in caplog.text and "int4_sym, group size 16" in caplog.text
    caplog.clear()
    try:
        nncf.set_log_level(logging.WARNING)
        nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16)
        assert "bitwidth" not in caplog.text
    finally:
        nncf.set_log_level(logging.INFO)
