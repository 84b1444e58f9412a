"""examples/classification/main.py end to end: FP32 pre-training, QAT, best/last checkpoints, resume, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "classification"


def _run(*args: str, timeout: int = 300) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    done = subprocess.run([sys.executable, str(SAMPLE / "main.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"sample failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):]) | {"stdout": done.stdout}


def _digits_test_split():
    sys.path.insert(0, str(SAMPLE))
    from sample_data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("int8")
    result = _run("--config", str(SAMPLE / "configs" / "digits_int8_sym.json"), "--pretrain-epochs", "3",
                  "--epochs", "1", "--checkpoint-dir", str(out), "--export", str(out / "model.onnx"))
    return result, out


@pytest.mark.slow
def test_sample_pretrains_then_qat_keeps_accuracy_and_prints_statistics(int8_run):
    result, out = int8_run
    assert result["fp32_top1"] >= 0.95, result
    assert [e["epoch"] for e in result["epochs"]] == [0]
    assert result["epochs"][0]["stage"] == 2  # FULLY_COMPRESSED
    assert result["final_top1"] >= result["fp32_top1"] - 0.02, result
    assert f"top-1 {result['epochs'][0]['top1']:.4f}" in result["stdout"]
    assert (out / "best.pth").exists() and (out / "last.pth").exists() and (out / "fp32.pth").exists()


@pytest.mark.slow
def test_sample_export_runs_in_onnxruntime_with_the_printed_accuracy(int8_run):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    result, out = int8_run
    proto = onnx.load(str(out / "model.onnx"))
    assert any(node.op_type == "QuantizeLinear" for node in proto.graph.node)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    data = _digits_test_split()
    logits = session.run(None, {session.get_inputs()[0].name: data.x_test.numpy()})[0]
    accuracy = float((np.argmax(logits, 1) == data.y_test.numpy()).mean())
    assert abs(accuracy - result["final_top1"]) <= 2 / len(data.y_test), (accuracy, result["final_top1"])


@pytest.mark.slow
def test_sample_resume_restores_the_exact_model_and_continues(int8_run):
    result, out = int8_run
    checkpoint = torch.load(out / "last.pth", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["compression_state"]
    resumed = _run("--config", str(SAMPLE / "configs" / "digits_int8_sym.json"), "--resume", str(out / "last.pth"),
                   "--epochs", "2", "--checkpoint-dir", str(out / "resumed"))
    assert resumed["init_top1"] == checkpoint["acc1"] == result["final_top1"]  # identical model, no re-init
    assert [e["epoch"] for e in resumed["epochs"]] == [1]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["digits_fp32", "digits_int8_asym_per_channel", "digits_int8_staged"])
def test_every_shipped_config_trains_from_the_fp32_weights(int8_run, config, tmp_path):
    _, out = int8_run
    epochs = "3" if config == "digits_int8_staged" else "1"
    result = _run("--config", str(SAMPLE / "configs" / f"{config}.json"), "--weights", str(out / "fp32.pth"),
                  "--epochs", epochs, "--checkpoint-dir", str(tmp_path))
    assert result["fp32_top1"] >= 0.95
    assert result["final_top1"] >= result["fp32_top1"] - 0.02, result
    stages = [e["stage"] for e in result["epochs"]]
    expected = {"digits_fp32": [0], "digits_int8_asym_per_channel": [2], "digits_int8_staged": [0, 1, 2]}[config]
    assert stages == expected


@pytest.mark.slow
def test_sample_under_torchrun_two_gloo_ranks(int8_run, tmp_path):
    import socket

    _, out = int8_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(SAMPLE / "main.py"),
         "--config", str(SAMPLE / "configs" / "digits_int8_sym.json"), "--weights", str(out / "fp32.pth"),
         "--epochs", "1", "--checkpoint-dir", str(tmp_path)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert "2 rank(s)" in done.stdout
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout[-3000:]  # rank 0 alone reports
    result = json.loads(lines[0][len("RESULT "):])
    assert result["final_top1"] >= result["fp32_top1"] - 0.02, result
    assert torch.load(tmp_path / "last.pth", weights_only=False)["compression_state"]


def _sample_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("classification_sample_main", SAMPLE / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_checkpoint_rule_prefers_the_higher_stage_then_the_higher_top1():
    is_better = _sample_main().is_better
    assert is_better(0, 0.5, None)
    assert is_better(2, 0.90, (1, 0.99))  # a higher stage wins even with a lower top-1
    assert not is_better(1, 0.999, (2, 0.90))
    assert is_better(2, 0.91, (2, 0.90)) and not is_better(2, 0.90, (2, 0.90))


def test_staged_schedule_poly_lr_drop_and_weight_decay_off():
    main = _sample_main()
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    params = {"base_lr": 1e-3, "base_wd": 1e-5, "lr_poly_drop_start_epoch": 2, "lr_poly_drop_duration_epochs": 2,
              "disable_wd_start_epoch": 3}
    schedule = main.StagedSchedule(params, optimizer)
    expected = {1.0: (1e-3, 1e-5), 2.5: (1e-3 * 0.75**2.1, 1e-5), 3.0: (1e-3 * 0.5**2.1, 0.0), 4.5: (0.0, 0.0)}
    for epoch, (lr, wd) in expected.items():
        schedule.update(epoch)
        group = optimizer.param_groups[0]
        assert group["lr"] == pytest.approx(lr, rel=1e-12, abs=0) and group["weight_decay"] == wd, epoch


@pytest.mark.slow
def test_magnitude_sparsity_then_const_sparsity_int8_from_its_stripped_weights(tmp_path):
    mag = _run("--config", str(SAMPLE / "configs" / "digits_magnitude_sparsity.json"), "--pretrain-epochs", "3",
               "--epochs", "3", "--checkpoint-dir", str(tmp_path / "mag"), timeout=900)
    assert [e["stage"] for e in mag["epochs"]] == [1, 1, 2]  # 10 % -> ... -> 50 % at epoch 2
    assert mag["final_top1"] >= mag["fp32_top1"] - 0.02, mag
    assert "Statistics of the magnitude_sparsity algorithm" in mag["stdout"]
    weights = torch.load(tmp_path / "mag" / "stripped.pth", weights_only=True)
    sparse = [k for k, v in weights.items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((weights[k] == 0).sum()) for k in sparse) / sum(weights[k].numel() for k in sparse)
    assert 0.49 <= zeros <= 0.51
    const = _run("--config", str(SAMPLE / "configs" / "digits_const_sparsity_int8.json"), "--weights",
                 str(tmp_path / "mag" / "stripped.pth"), "--epochs", "1", "--checkpoint-dir", str(tmp_path / "const"),
                 "--export", str(tmp_path / "const" / "model.onnx"), timeout=900)
    assert const["final_top1"] >= mag["final_top1"] - 0.02, const
    assert "Statistics of the const_sparsity algorithm" in const["stdout"]
    levels = [line.split("│")[2].strip() for line in const["stdout"].splitlines()
              if "Sparsity level of the sparsified weights" in line]
    assert levels and all(abs(float(level.rstrip(" %")) - 100 * zeros) < 0.01 for level in levels), levels
    assert (tmp_path / "const" / "model.onnx").exists()


@pytest.fixture(scope="module")
def pruning_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("pruning")
    result = _run("--config", str(SAMPLE / "configs" / "digits_filter_pruning.json"), "--pretrain-epochs", "4",
                  "--epochs", "1", "--checkpoint-dir", str(out), "--export", str(out / "model.xml"))
    return result, out


def _onnx_initializer_shapes(path: Path) -> list[tuple[int, ...]]:
    onnx = pytest.importorskip("onnx")
    return [tuple(t.dims) for t in onnx.load(str(path)).graph.initializer]


@pytest.mark.slow
def test_sample_prunes_the_residual_cnn_and_exports_the_smaller_openvino_model(pruning_run):
    ov = pytest.importorskip("openvino")
    result, out = pruning_run
    assert result["fp32_top1"] >= 0.9, result
    assert [e["stage"] for e in result["epochs"]] == [1]  # exponential schedule: pruning_init at epoch 0
    assert result["final_top1"] >= result["fp32_top1"] - 0.05, result
    assert "filter_pruning algorithm" in result["stdout"] and "FLOPs (M): full / current" in result["stdout"]
    model = ov.Core().read_model(str(out / "model.xml"))
    shapes = [tuple(op.get_output_partial_shape(0).to_shape()) for op in model.get_ops()
              if op.get_type_name() == "Constant"]
    assert not any(len(s) == 4 and s[0] == 96 for s in shapes)  # the 96-filter expand conv lost filters
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = _digits_test_split()
    logits = np.asarray(compiled(data.x_test.numpy())[0])
    accuracy = float((np.argmax(logits, 1) == data.y_test.numpy()).mean())
    assert abs(accuracy - result["final_top1"]) <= 2 / len(data.y_test), (accuracy, result["final_top1"])


@pytest.mark.slow
def test_sample_stacks_pruning_with_int8_and_exports_a_smaller_qdq_model(pruning_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, out = pruning_run
    result = _run("--config", str(SAMPLE / "configs" / "digits_filter_pruning_int8.json"), "--weights",
                  str(out / "fp32.pth"), "--epochs", "2", "--checkpoint-dir", str(tmp_path), "--export",
                  str(tmp_path / "model.onnx"))
    assert [e["stage"] for e in result["epochs"]] == [1, 2]  # the FLOPs target at epoch 1 (pruning_steps 2)
    assert result["final_top1"] >= result["fp32_top1"] - 0.05, result
    shapes = _onnx_initializer_shapes(tmp_path / "model.onnx")
    assert not any(len(s) == 4 and s[0] == 96 for s in shapes), shapes
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    data = _digits_test_split()
    logits = session.run(None, {session.get_inputs()[0].name: data.x_test.numpy()})[0]
    accuracy = float((np.argmax(logits, 1) == data.y_test.numpy()).mean())
    assert abs(accuracy - result["final_top1"]) <= 2 / len(data.y_test), (accuracy, result["final_top1"])
