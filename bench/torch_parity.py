"""Parity of a quantized PyTorch model with its exports: fake-quantized torch vs ONNX Runtime vs OpenVINO.

    python bench/torch_parity.py

Digits CNN: max |logit difference| and argmax agreement on 594 held-out digits. MiniLM: max |hidden
state difference| and mean cosine of sentence embeddings on 64 real sentences.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openvino as ov  # noqa: E402
import torch  # noqa: E402

import nncompress as nncf  # noqa: E402
from bench import common, harness  # noqa: E402
from bench import models as real  # noqa: E402


def _runners(int8, example, tmp: Path, dynamic_axes=None):
    onnx_path = nncf.export(int8, tmp / "m.onnx", example_input=example, dynamic_axes=dynamic_axes)
    session = common.onnx_session(str(onnx_path))
    names = [i.name for i in session.get_inputs()]
    compiled = common.compile_openvino(ov.convert_model(str(onnx_path)))
    return {
        "ONNX Runtime": lambda item: session.run(None, common._feed(names, item))[0],
        "OpenVINO": lambda item: compiled(common._feed(names, item))[0],
    }


def digits_rows(tmp: Path) -> list[list[str]]:
    from examples import digits_cnn as digits

    data = digits.load_digits_data()
    model = digits.get_trained_digits_cnn()
    int8 = nncf.quantize(model, nncf.Dataset(list(data.x_train[:300]), lambda i: torch.from_numpy(i[None])))
    with torch.no_grad():
        reference = int8(torch.from_numpy(data.x_test)).numpy()
    rows = []
    for name, run in _runners(int8, torch.from_numpy(data.x_test[:1]), tmp).items():
        logits = np.concatenate([run(data.x_test[i : i + 64]) for i in range(0, len(data.x_test), 64)])
        agree = (logits.argmax(1) == reference.argmax(1)).mean()
        rows.append(["digits CNN", name, f"{np.abs(logits - reference).max():.4f}",
                     f"{np.abs(reference).max():.2f}", f"argmax agreement {agree:.4f}"])
    return rows


def minilm_rows(tmp: Path) -> list[list[str]]:
    model, tokenizer = real.load_minilm()
    wrapped = real._LastHiddenState(model).eval()
    sentences = real.minilm_sentences(300)
    calibration = [{k: torch.from_numpy(v) for k, v in item.items()} for item in
                   real.minilm_inputs(tokenizer, sentences[64:])]
    int8 = nncf.quantize(wrapped, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER)
    items = real.minilm_inputs(tokenizer, sentences[:64])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "output"]}
    example = {k: torch.from_numpy(v) for k, v in items[0].items()}
    rows = []
    with torch.no_grad():
        reference = [int8(**{k: torch.from_numpy(v) for k, v in i.items()}).numpy() for i in items]
    for name, run in _runners(int8, example, tmp, axes).items():
        outputs = [run(i) for i in items]
        diff = max(np.abs(o - r).max() for o, r in zip(outputs, reference))
        cos = np.mean([(real.mean_pooled_embeddings(o, i["attention_mask"]) *
                        real.mean_pooled_embeddings(r, i["attention_mask"])).sum() for o, r, i in
                       zip(outputs, reference, items)])
        rows.append(["MiniLM", name, f"{diff:.4f}", f"{max(np.abs(r).max() for r in reference):.2f}",
                     f"embedding cosine {cos:.4f}"])
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = digits_rows(Path(tmp)) + minilm_rows(Path(tmp))
    headers = ["model", "export run in", "max abs diff vs torch", "max abs torch output", "agreement"]
    table = common.markdown_table(headers, rows)
    print(table)
    notes = (harness.provenance("python bench/torch_parity.py") + " Accuracy only (no timing). "
             "The reference is the fake-quantized PyTorch model; exports are `nncompress.export` ONNX (QDQ) run in "
             "ONNX Runtime and its `openvino.convert_model` conversion, both with integer kernels. Differences come "
             "from integer arithmetic and float rounding flipping individual quantization steps.")
    common.write_benchmarks_section("PyTorch export parity", "python bench/torch_parity.py", table, notes)


if __name__ == "__main__":
    main()
