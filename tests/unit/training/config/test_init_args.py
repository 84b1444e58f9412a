"""register_default_init_args (NNCF 2.x signature), the init-args structs and InitializingDataLoader."""

import inspect

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nncompress.errors import CalibrationError, ConfigError, OneShotDatasetError, ValidationError
from nncompress.training.config import NNCFConfig
from nncompress.training.config.init_args import (
    AutoQPrecisionInitArgs,
    BNAdaptationInitArgs,
    DistributedCallbacksArgs,
    InitializingDataLoader,
    LeGRInitArgs,
    ModelEvaluationArgs,
    PTInitializingDataLoader,
    QuantizationPrecisionInitArgs,
    QuantizationRangeInitArgs,
    register_default_init_args,
    wrap_dataloader_for_init,
)


def _loader(n=10, batch_size=4):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    y = torch.arange(n)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def test_signature_is_nncf_2x():
    params = list(inspect.signature(register_default_init_args).parameters)
    assert params == [
        "nncf_config", "train_loader", "criterion", "criterion_fn", "train_steps_fn", "validate_fn", "val_loader",
        "autoq_eval_fn", "model_eval_fn", "distributed_callbacks", "execution_parameters", "legr_train_optimizer",
        "device",
    ]  # fmt: skip


def test_registers_range_and_bn_loaders_and_returns_the_config():
    config = NNCFConfig.from_dict({})
    loader = _loader()
    assert register_default_init_args(config, loader, device="cpu") is config
    range_args = config.get_extra_struct(QuantizationRangeInitArgs)
    bn_args = config.get_extra_struct(BNAdaptationInitArgs)
    assert isinstance(range_args.data_loader, InitializingDataLoader)
    assert range_args.data_loader.data_loader is loader and bn_args.data_loader.data_loader is loader
    assert range_args.device == "cpu" and bn_args.device == "cpu"
    assert not config.has_extra_struct(QuantizationPrecisionInitArgs)
    assert not config.has_extra_struct(LeGRInitArgs)


def test_criterion_registers_precision_args_with_default_criterion_fn():
    config = NNCFConfig.from_dict({})
    criterion = torch.nn.MSELoss()
    register_default_init_args(config, _loader(), criterion)
    args = config.get_extra_struct(QuantizationPrecisionInitArgs)
    assert args.criterion is criterion
    out, target = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert args.criterion_fn(out, target, criterion).item() == pytest.approx(5.0)  # (1 + 9) / 2


def test_custom_criterion_fn_is_kept():
    config = NNCFConfig.from_dict({})

    def fn(outputs, target, criterion):
        return 42

    register_default_init_args(config, _loader(), torch.nn.MSELoss(), criterion_fn=fn)
    assert config.get_extra_struct(QuantizationPrecisionInitArgs).criterion_fn is fn


def test_criterion_fn_without_criterion_is_an_error():
    with pytest.raises(ValidationError, match="criterion_fn was given without criterion"):
        register_default_init_args(NNCFConfig.from_dict({}), _loader(), criterion_fn=lambda o, t, c: 0)


def test_legr_autoq_eval_and_distributed_structs():
    config = NNCFConfig.from_dict({})
    train, val = _loader(), _loader(6)

    def train_fn(*a):
        return None

    def val_fn(*a):
        return 0.5

    wrap, unwrap = (lambda m: m), (lambda m: m)
    register_default_init_args(
        config, train, train_steps_fn=train_fn, validate_fn=val_fn, val_loader=val, autoq_eval_fn=val_fn,
        model_eval_fn=val_fn, distributed_callbacks=(wrap, unwrap), execution_parameters="exec",
        legr_train_optimizer="opt",
    )  # fmt: skip
    legr = config.get_extra_struct(LeGRInitArgs)
    assert (legr.train_loader, legr.train_fn, legr.val_loader, legr.val_fn) == (train, train_fn, val, val_fn)
    assert (legr.train_optimizer, legr.execution_parameters, legr.nncf_config) == ("opt", "exec", config)
    autoq = config.get_extra_struct(AutoQPrecisionInitArgs)
    assert autoq.data_loader is val and autoq.eval_fn is val_fn
    assert config.get_extra_struct(ModelEvaluationArgs).eval_fn is val_fn
    callbacks = config.get_extra_struct(DistributedCallbacksArgs)
    assert callbacks.wrapping_callback is wrap and callbacks.unwrapping_callback is unwrap


def test_partial_legr_arguments_are_an_error():
    with pytest.raises(ValidationError, match="missing: validate_fn, val_loader"):
        register_default_init_args(NNCFConfig.from_dict({}), _loader(), train_steps_fn=lambda *a: None)


def test_bad_distributed_callbacks():
    with pytest.raises(ValidationError, match="distributed_callbacks must be"):
        register_default_init_args(NNCFConfig.from_dict({}), _loader(), distributed_callbacks=(print,))


def test_config_must_be_an_nncf_config():
    with pytest.raises(ValidationError, match="nncf_config must be an NNCFConfig.*got dict"):
        register_default_init_args({}, _loader())


def test_missing_struct_error_says_to_register():
    with pytest.raises(ConfigError, match="QuantizationRangeInitArgs.*register_default_init_args"):
        NNCFConfig.from_dict({}).get_extra_struct(QuantizationRangeInitArgs)


def test_initializing_loader_default_contract():
    loader = _loader(10, 4)
    init = PTInitializingDataLoader(loader)
    assert PTInitializingDataLoader is InitializingDataLoader
    assert len(init) == 3 and init.batch_size == 4
    batches = list(init)
    assert len(batches) == 3
    args, kwargs = init.get_inputs(batches[0])
    assert kwargs == {} and len(args) == 1 and torch.equal(args[0], torch.arange(12.0).reshape(4, 3))
    assert torch.equal(init.get_target(batches[0]), torch.arange(4))


def test_dict_and_tensor_batches():
    init = InitializingDataLoader([{"input_ids": torch.ones(2, 5), "labels": torch.zeros(2)}])
    args, kwargs = init.get_inputs(next(iter(init)))
    assert args == () and set(kwargs) == {"input_ids", "labels"}
    assert torch.equal(init.get_target(next(iter(init))), torch.zeros(2))
    assert init.batch_size == 2  # a list has no batch_size: read from the first batch
    tensors = InitializingDataLoader([torch.ones(7, 3)])
    (x,), _ = tensors.get_inputs(torch.ones(7, 3))
    assert x.shape == (7, 3) and tensors.batch_size == 7
    with pytest.raises(CalibrationError, match="override get_target"):
        tensors.get_target(torch.ones(7, 3))


def test_subclass_overrides_inputs():
    class MyLoader(InitializingDataLoader):
        def get_inputs(self, dataloader_output):
            return (dataloader_output["a"], dataloader_output["b"]), {}

    init = wrap_dataloader_for_init(MyLoader([{"a": torch.ones(3, 1), "b": 2}]))
    assert type(init) is MyLoader and init.batch_size == 3
    config = register_default_init_args(NNCFConfig.from_dict({}), init)
    assert config.get_extra_struct(QuantizationRangeInitArgs).data_loader is init


def test_wrap_is_identity_for_a_wrapped_loader():
    init = InitializingDataLoader(_loader())
    assert wrap_dataloader_for_init(init) is init
    assert InitializingDataLoader(init).data_loader is init.data_loader  # no double wrapping


def test_one_shot_and_non_iterable_loaders_are_rejected():
    with pytest.raises(OneShotDatasetError, match="can be read only once"):
        wrap_dataloader_for_init(iter([torch.ones(1)]))
    with pytest.raises(ValidationError, match="must be iterable.*got int"):
        wrap_dataloader_for_init(5)


def test_empty_loader_and_unknown_batch_size():
    with pytest.raises(CalibrationError, match="empty"):
        _ = InitializingDataLoader([]).batch_size
    with pytest.raises(CalibrationError, match="cannot tell the batch size"):
        _ = InitializingDataLoader([("not a tensor", 1)]).batch_size


def test_len_of_an_unsized_loader_is_a_type_error():
    class Stream:
        def __iter__(self):
            yield torch.ones(1, 2)

    init = InitializingDataLoader(Stream())
    with pytest.raises(TypeError, match="has no length"):
        len(init)
    assert init.batch_size == 1
