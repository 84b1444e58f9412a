"""Dataset: re-iterable views, one-shot sources (one pass, peeked first item), index checks, and the
one-shot source through quantize / compress_weights / accuracy control."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import CalibrationError, OneShotDatasetError, ValidationError
from tests import accuracy_control_models as acm

# --------------------------------------------------------------------------- re-iterable views


@pytest.mark.parametrize("source", [[5, 6, 7], lambda: iter([5, 6, 7])], ids=["list", "factory"])
def test_views_reiterate_and_give_the_same_items_every_time(source):
    calls = []
    ds = nncf.Dataset(source, lambda v: calls.append(v) or v * 2)
    data, inference = ds.get_data(), ds.get_inference_data()
    assert list(data) == [5, 6, 7] and list(data) == [5, 6, 7]
    assert list(inference) == [10, 12, 14] and list(inference) == [10, 12, 14]
    assert calls == [5, 6, 7, 5, 6, 7]  # transform_fn once per item per pass
    chosen = ds.get_data([2, 0])
    assert list(chosen) == [5, 7] == list(chosen)  # sorted indices, as NNCF
    assert len(chosen) == 2


def test_len_of_a_view_where_known():
    ds = nncf.Dataset([1, 2, 3, 4])
    assert len(ds.get_data()) == 4 and len(ds.get_inference_data()) == 4 and len(ds.get_data([1, 3])) == 2
    assert ds.get_length() == 4 and ds.get_batch_size() is None
    factory = nncf.Dataset(lambda: iter([1, 2]))
    assert not hasattr(factory.get_data(), "__len__") and factory.get_length() is None
    assert len(factory.get_data([0])) == 1


def test_a_dataloader_like_source_is_not_iterated_until_used():
    class Loader:
        batch_size = 4

        def __init__(self):
            self.iterations = 0

        def __len__(self):
            return 2

        def __iter__(self):
            self.iterations += 1
            return iter(["b0", "b1"])

    loader = Loader()
    ds = nncf.Dataset(loader)
    view = ds.get_data()
    assert loader.iterations == 0 and not ds.is_one_shot
    assert list(view) == ["b0", "b1"] == list(view) and loader.iterations == 2
    assert ds.get_batch_size() == 4 and len(view) == 2


def test_a_factory_returning_a_used_iterator_raises_instead_of_an_empty_pass():
    shared = iter([1, 2])
    ds = nncf.Dataset(lambda: shared)
    assert list(ds.get_data()) == [1, 2]
    with pytest.raises(OneShotDatasetError, match="NEW iterator on every call"):
        list(ds.get_data())


# --------------------------------------------------------------------------- one-shot sources


def test_one_shot_generator_gives_one_pass_with_the_peeked_item_replayed():
    pulled = []

    def gen():
        for v in (3, 4, 5):
            pulled.append(v)
            yield v

    ds = nncf.Dataset(gen(), lambda v: v + 100)
    assert ds.is_one_shot
    assert ds.peek_inference_data() == [103] == ds.peek_inference_data()
    assert pulled == [3]  # peeking twice pulls one item
    view = ds.get_inference_data()
    assert list(view) == [103, 104, 105]
    with pytest.raises(OneShotDatasetError, match=r"already read once.*pass a list.*zero-argument callable") as info:
        iter(view)  # raised at iter(), before any item
    assert isinstance(info.value, CalibrationError)
    with pytest.raises(OneShotDatasetError):
        list(ds.get_data())  # a new view of the same source: the same error
    with pytest.raises(OneShotDatasetError):
        ds.peek_inference_data()


def test_require_reiterable_only_for_one_shot_sources():
    nncf.Dataset([1]).require_reiterable("x")
    nncf.Dataset(lambda: iter([1])).require_reiterable("x")
    with pytest.raises(OneShotDatasetError, match=r"one-shot iterator \(generator\).*but BC needs two passes; pass"):
        nncf.Dataset(v for v in [1]).require_reiterable("BC needs two passes")
    assert nncf.Dataset(map(int, "12")).is_one_shot and nncf.Dataset(iter([1])).is_one_shot


def test_empty_one_shot_source_peeks_nothing():
    ds = nncf.Dataset(v for v in [])
    assert ds.peek_inference_data() == [] and list(ds.get_data()) == []


# --------------------------------------------------------------------------- indices


@pytest.mark.parametrize(
    "indices, message",
    [
        ([0, 4], r"dataset index 4 is out of range for a dataset of 4 items \(valid: 0..3\)"),
        ([1, 2, 1], "dataset index 1 is given twice"),
        ([-1], "dataset index -1 is out of range"),
        ([0.5], "must be integers; got 0.5"),
        ([True], "must be integers; got True"),
        (3, "iterable of integers or None; got 3"),
    ],
)
def test_bad_indices_are_named(indices, message):
    ds = nncf.Dataset([10, 11, 12, 13])
    with pytest.raises(ValidationError, match=message):
        ds.get_data(indices)
    with pytest.raises(ValidationError, match=message):
        ds.get_inference_data(indices)


def test_out_of_range_index_of_a_source_without_length_is_named_when_reached():
    ds = nncf.Dataset(lambda: iter([10, 11, 12]))
    seen = []
    with pytest.raises(ValidationError, match=r"dataset index 7 is out of range: .* only 3 items \(valid: 0..2\)"):
        seen.extend(ds.get_data([7, 1]))
    assert seen == [11]
    assert list(ds.get_data(np.array([2, 0]))) == [10, 12]
    assert list(ds.get_data([])) == []


def test_transform_failures_name_the_dataset_index():
    ds = nncf.Dataset([1, 2, "x"], lambda v: v + 1)
    with pytest.raises(CalibrationError, match="item 2"):
        list(ds.get_inference_data([0, 2]))


# --------------------------------------------------------------------------- through the API


def _digits_case(backend, request, digits_data):
    model = request.getfixturevalue(f"digits_{backend}")
    if backend == "torch":
        import torch

        return model, lambda image: torch.from_numpy(image[None])
    return model, lambda image: image[None]


def _logits(model, x):
    if type(model).__name__ == "Model":
        from nncompress.backends.openvino.runner import compile_model

        model = compile_model(model)
    return acm.logits_of(model, x)


def _counting(images, pulled):
    for image in images:
        pulled.append(1)
        yield image


@pytest.mark.parametrize("backend", ["onnx", "openvino", pytest.param("torch", marks=pytest.mark.slow)])
def test_quantize_with_a_one_shot_generator_equals_the_list_source(backend, request, digits_data):
    model, to_input = _digits_case(backend, request, digits_data)
    images = list(digits_data.x_train[:20])
    pulled = []
    from_generator = nncf.quantize(model, nncf.Dataset(_counting(images, pulled), to_input), subset_size=20)
    assert nncf.last_report().calibration_items == 20 and len(pulled) == 20
    from_list = nncf.quantize(model, nncf.Dataset(images, to_input), subset_size=20)
    x = digits_data.x_test[:32]
    np.testing.assert_array_equal(_logits(from_generator, x), _logits(from_list, x))


@pytest.mark.parametrize("options", [{"fast_bias_correction": False}, {"model_type": nncf.ModelType.TRANSFORMER}])
def test_quantize_passes_beyond_one_raise_before_any_statistics(options, digits_onnx, digits_data):
    pulled = []
    ds = nncf.Dataset(_counting(digits_data.x_train[:20], pulled), lambda image: image[None])
    with pytest.raises(OneShotDatasetError, match="statistics pass.*pass a list"):
        nncf.quantize(digits_onnx, ds, subset_size=20, **options)
    assert len(pulled) == 1  # only the first item, read to check the inputs


def test_accuracy_control_rejects_a_one_shot_validation_source_before_any_work(digits_onnx, digits_data):
    pulled, calls = [], []
    calibration = nncf.Dataset(_counting(digits_data.x_train[:20], pulled), lambda image: image[None])
    validation = nncf.Dataset(((x, y) for x, y in zip(digits_data.x_test[:20], digits_data.y_test)),
                              lambda item: item[0][None])
    with pytest.raises(OneShotDatasetError, match="reads validation_dataset many times"):
        nncf.quantize_with_accuracy_control(digits_onnx, calibration, validation,
                                            lambda model, data: calls.append(1) or 1.0)
    assert pulled == [] and calls == []


@pytest.mark.parametrize("backend", ["onnx", "openvino", "torch"])
def test_compress_weights_with_a_one_shot_generator_equals_the_list_source(backend):
    from tests.weights import models

    if backend == "torch":
        import torch

        model = models.torch_model()
        items = [{k: torch.from_numpy(v) for k, v in models.inputs(seed).items()} for seed in range(4)]
    else:
        pytest.importorskip(backend)
        model = models.onnx_model() if backend == "onnx" else models.openvino_model()
        items = [models.inputs(seed) for seed in range(4)]
    kwargs = {"mode": "int4_asym", "group_size": 16, "ratio": 0.5, "all_layers": True, "scale_estimation": True,
              "sensitivity_metric": nncf.SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE}  # data-dependent result
    pulled = []
    from_generator = nncf.compress_weights(model, dataset=nncf.Dataset(_counting(items, pulled)), **kwargs)
    assert nncf.last_report().calibration_items == 4 and len(pulled) == 4
    from_list = nncf.compress_weights(model, dataset=nncf.Dataset(items), **kwargs)
    assert _weights(from_generator) == _weights(from_list)


def _weights(model) -> list[bytes]:
    """Every stored tensor's bytes, in a backend-neutral way."""
    kind = type(model).__name__
    if kind == "ModelProto":
        return [bytes(t.raw_data) or str(t).encode() for t in model.graph.initializer]
    if kind == "Model":
        return [op.get_data().tobytes() for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
    return [t.detach().numpy().tobytes() for t in [*model.parameters(), *model.buffers()]]


def test_transform_keyword_of_nncf_3_and_of_nncf_2_both_work():
    items = [1, 2, 3]
    assert list(nncf.Dataset(items, transform_func=lambda x: x * 10).get_inference_data()) == [10, 20, 30]
    assert list(nncf.Dataset(items, transform_fn=lambda x: x + 1).get_inference_data()) == [2, 3, 4]
    with pytest.raises(nncf.ValidationError, match="transform_func or transform_fn"):
        nncf.Dataset(items, transform_func=abs, transform_fn=abs)
    with pytest.raises(nncf.ValidationError, match="must be callable.*got int"):
        nncf.Dataset(items, transform_func=3)
