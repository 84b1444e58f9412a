"""create_example_input: shapes, dtypes, fillers (reproducible random), keywords, bad values."""

import pytest
import torch

from nncompress.errors import ConfigError
from nncompress.training.config import InputInfo, NNCFConfig
from nncompress.training.config.input_info import create_example_input


def test_positional_and_keyword_inputs_in_order():
    infos = [
        InputInfo((2, 3)),
        InputInfo((2, 8), "long", "zeros", "attention_mask"),
        InputInfo((4,), "float", "zeros"),
    ]
    args, kwargs = create_example_input(infos)
    assert len(args) == 2 and list(kwargs) == ["attention_mask"]
    assert torch.equal(args[0], torch.ones(2, 3)) and torch.equal(args[1], torch.zeros(4))
    assert kwargs["attention_mask"].dtype == torch.int64 and torch.equal(kwargs["attention_mask"], torch.zeros(2, 8))


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("float", torch.float32), ("half", torch.float16), ("double", torch.float64), ("long", torch.int64),
     ("int", torch.int32), ("int8", torch.int8), ("uint8", torch.uint8), ("bool", torch.bool),
     ("bfloat16", torch.bfloat16)],
)  # fmt: skip
def test_types(name, dtype):
    (x,), _ = create_example_input([InputInfo((2, 2), name)])
    assert x.dtype == dtype and x.shape == (2, 2)
    assert torch.equal(x, torch.ones(2, 2, dtype=dtype))


def test_random_filler_is_reproducible_and_in_range():
    infos = [InputInfo((64,), "float", "random"), InputInfo((64,), "long", "random")]
    (a, b), _ = create_example_input(infos)
    (a2, b2), _ = create_example_input(infos)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert 0.0 <= a.min() and a.max() < 1.0 and a.std() > 0.1  # uniform [0, 1), not constant
    assert set(b.tolist()) == {0, 1}
    (flags,), _ = create_example_input([InputInfo((64,), "bool", "random")])
    assert flags.dtype == torch.bool and 0 < flags.sum() < 64


def test_dicts_and_config_input_infos():
    config = NNCFConfig.from_dict({"input_info": [{"sample_size": [1, 4]}, {"sample_size": [1], "keyword": "k"}]})
    args, kwargs = create_example_input(config.input_infos())
    assert args[0].shape == (1, 4) and kwargs["k"].shape == (1,)
    args, _ = create_example_input([{"sample_size": [3, 1], "filler": "zeros"}])
    assert torch.equal(args[0], torch.zeros(3, 1))


def test_device():
    (x,), _ = create_example_input([InputInfo((1,))], device="cpu")
    assert x.device.type == "cpu"
    (y,), _ = create_example_input([InputInfo((1,))], device=torch.device("meta"))
    assert y.device.type == "meta"


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"^input_info\.type: 'flaot' is not valid"):
        create_example_input([InputInfo((1,), "flaot")])
    with pytest.raises(ConfigError, match=r"^input_info\[1\]\.filler: 'noise' is not valid.*'random'"):
        create_example_input([InputInfo((1,)), InputInfo((1,), "float", "noise")])
    with pytest.raises(ConfigError, match=r"^input_info\.sample_size: must be a list of positive integers"):
        create_example_input([InputInfo((1, 0))])
    with pytest.raises(ConfigError, match=r"^input_info\[1\]\.filler: 'one' is not valid \(did you mean 'ones'\?\)"):
        create_example_input([{"sample_size": [1]}, {"sample_size": [1], "filler": "one"}])
    with pytest.raises(ConfigError, match=r"^input_info\[1\]\.keyword: 'x' is used by more than one input"):
        create_example_input([InputInfo((1,), keyword="x"), InputInfo((1,), keyword="x")])
    with pytest.raises(ConfigError, match=r"^input_info: must be an InputInfo or a dict"):
        create_example_input([(1, 2)])


def test_empty_input_info():
    with pytest.raises(ConfigError, match="input_info is empty"):
        create_example_input([])


def test_config_package_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, nncompress.training.config as c; "
        "c.NNCFConfig.from_dict({'compression': {'algorithm': 'quantization'}}).algorithm_specs(); "
        "import nncompress.training.config.init_args, nncompress.training.config.input_info; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
