"""examples/semantic_segmentation smoke mode: every shipped config trains a few steps on a tiny synthetic set, exports,
and the exported model (ONNX Runtime / OpenVINO) gives PyTorch's outputs and mIoU."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")
pytest.importorskip("onnxruntime")

from tests.e2e.sample_smoke import conv_filters, run_sample, sparsity_of_stripped  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "semantic_segmentation" / "configs"


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("unet_fp32")
    result = run_sample("semantic_segmentation", "--config", str(CONFIGS / "unet_fp32.json"), "--pretrain-epochs", "2",
                        "--epochs", "1", "--checkpoint-dir", str(out), "--export", str(out / "model.onnx"))
    return result, out


@pytest.mark.slow
def test_fp32_trains_exports_and_onnx_matches_pytorch(fp32):
    result, out = fp32
    assert (out / "fp32.pth").exists() and (out / "best.pth").exists() and (out / "last.pth").exists()
    assert [e["stage"] for e in result["epochs"]] == [0]
    assert 0.0 <= result["final_miou"] <= 1.0
    assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["output_scale"]), result
    assert result["export_miou"] == pytest.approx(result["final_miou"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("config, epochs, stages, suffix", [
    ("unet_int8", 1, [2], ".xml"),
    ("unet_magnitude_sparsity", 3, [1, 1, 2], ".onnx"),
    ("unet_filter_pruning", 2, [1, 2], ".onnx"),
    ("unet_filter_pruning_int8", 1, [2], ".onnx"),
])
def test_compression_config_trains_exports_and_matches_pytorch(fp32, config, epochs, stages, suffix):
    _, base = fp32
    out = base / config
    result = run_sample("semantic_segmentation", "--config", str(CONFIGS / f"{config}.json"), "--weights",
                        str(base / "fp32.pth"), "--epochs", str(epochs), "--checkpoint-dir", str(out), "--export",
                        str(out / f"model{suffix}"))
    assert [e["stage"] for e in result["epochs"]] == stages
    # INT8 outputs may differ by a rounding step here and there (fake-quant vs QDQ kernels): small on average
    assert result["mean_abs_diff"] <= 0.01 * max(1.0, result["output_scale"]), result
    assert result["export_miou"] == pytest.approx(result["final_miou"], abs=0.05), result
    if "pruning" in config:
        assert conv_filters(out / "model.onnx") < conv_filters(base / "model.onnx")
    if config == "unet_magnitude_sparsity":
        assert 0.49 <= sparsity_of_stripped(out / "stripped.pth") <= 0.51
