"""NNCFConfig: loading (JSON with comments), specs with NNCF's defaults, global params, extra structs."""

import copy
import pickle

import pytest

from nncompress.errors import ConfigError
from nncompress.training.config import (
    AlgorithmSpec,
    Config,
    InputInfo,
    NNCFConfig,
    QuantizationSpec,
    QuantizerGroupSpec,
    RangeInitSpec,
    StagedParams,
)

from . import example_configs as ex


def _spec(section: dict, **root) -> QuantizationSpec:
    (spec,) = NNCFConfig.from_dict({**root, "compression": {"algorithm": "quantization", **section}}).algorithm_specs()
    return spec


def test_config_alias_and_dict_behaviour():
    assert Config is NNCFConfig
    config = Config.from_dict(ex.RESNET50_INT8)
    assert isinstance(config, dict)
    assert config["compression"]["initializer"]["range"]["num_init_samples"] == 850
    assert config["batch_size"] == 85


def test_quantization_defaults():
    spec = _spec({})
    assert spec.weights == QuantizerGroupSpec(mode="symmetric", bits=8, signed=None, per_channel=None)
    assert spec.activations == QuantizerGroupSpec(mode="symmetric", bits=8, signed=None, per_channel=None)
    assert spec.range_init == (RangeInitSpec("mixed_min_max", 256, 0.1, 99.9, (), (), None),)
    assert spec.num_bn_adaptation_samples is None  # section absent: NNCF skips BN adaptation
    assert (spec.preset, spec.quantize_inputs, spec.quantize_outputs, spec.overflow_fix) == (
        "performance", True, False, "enable",
    )  # fmt: skip
    assert spec.staged is None and spec.precision is None and spec.scope_overrides == {}
    assert (spec.ignored_scopes, spec.target_scopes, spec.validate_scopes) == ((), (), True)
    assert (spec.target_device, spec.compression_lr_multiplier, spec.export_to_onnx_standard_ops) == (
        "ANY",
        None,
        False,
    )
    assert spec.name == "quantization"


def test_batchnorm_adaptation_default_when_section_present():
    assert _spec({"initializer": {"batchnorm_adaptation": {}}}).num_bn_adaptation_samples == 2000
    assert (
        _spec({"initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}}).num_bn_adaptation_samples
        == 0
    )


def test_staged_params_defaults():
    spec = _spec({"params": {}})
    assert spec.staged == StagedParams(1, 1, 1, None, 30, None, 1e-3, 1e-5)


def test_percentile_params_and_defaults():
    spec = _spec({"initializer": {"range": {"type": "percentile", "params": {"min_percentile": 1.5}}}})
    assert spec.range_init == (RangeInitSpec("percentile", 256, 1.5, 99.9),)


def test_mixed_preset_makes_activations_asymmetric_unless_set():
    assert _spec({"preset": "mixed"}).activations.mode == "asymmetric"
    assert _spec({"preset": "mixed"}).weights.mode == "symmetric"
    assert _spec({"preset": "mixed", "activations": {"mode": "symmetric"}}).activations.mode == "symmetric"


def test_resnet50_int8_spec():
    config = NNCFConfig.from_dict(ex.RESNET50_INT8)
    (spec,) = config.algorithm_specs()
    assert spec.range_init == (RangeInitSpec(num_init_samples=850),)
    assert config.input_infos() == [InputInfo((1, 3, 224, 224), "float", "ones", None)]
    assert config.target_device() == "ANY"


def test_mobilenet_per_tensor_spec():
    (spec,) = NNCFConfig.from_dict(ex.MOBILENET_V2_INT8_PER_TENSOR).algorithm_specs()
    assert spec.range_init[0].num_init_samples == 7000
    assert spec.num_bn_adaptation_samples == 4096
    assert spec.weights.per_channel is False and spec.activations.per_channel is False


def test_inception_ignored_scopes_are_a_tuple():
    (spec,) = NNCFConfig.from_dict(ex.INCEPTION_V3_INT8).algorithm_specs()
    assert spec.ignored_scopes == tuple(ex.INCEPTION_V3_INT8["compression"]["ignored_scopes"])
    assert len(spec.ignored_scopes) == 7


def test_hawq_staged_spec():
    config = NNCFConfig.from_dict(ex.RESNET50_HAWQ_STAGED)
    (spec,) = config.algorithm_specs()
    assert config.target_device() == "NPU" and spec.target_device == "NPU"
    assert spec.staged == StagedParams(
        batch_multiplier=1, activations_quant_start_epoch=3, weights_quant_start_epoch=12, lr_poly_drop_start_epoch=20,
        lr_poly_drop_duration_epochs=10, disable_wd_start_epoch=20, base_lr=3.1e-4, base_wd=1e-5,
    )  # fmt: skip
    assert spec.precision["type"] == "hawq" and spec.precision["bits"] == [4, 8]
    assert spec.precision["compression_ratio"] == 1.4
    # HAWQ defaults filled in
    assert (spec.precision["num_data_points"], spec.precision["iter_number"], spec.precision["tolerance"]) == (
        100, 200, 1e-4,
    )  # fmt: skip
    assert spec.precision["bitwidth_assignment_mode"] == "liberal"


def test_autoq_defaults_differ_from_hawq():
    (spec,) = NNCFConfig.from_dict(ex.MOBILENET_V2_AUTOQ_STAGED).algorithm_specs()
    assert spec.precision["iter_number"] == 300 and spec.precision["eval_subset_ratio"] == 0.2
    assert spec.precision["warmup_iter_number"] == 20
    assert spec.range_init == (RangeInitSpec("mean_min_max", 1500),)
    assert spec.num_bn_adaptation_samples == 4000
    assert spec.staged.activations_quant_start_epoch == 0 and spec.staged.weights_quant_start_epoch == 0
    assert _spec({"initializer": {"precision": {"type": "autoq"}}}).precision["compression_ratio"] == 0.15
    assert _spec({"initializer": {"precision": {"type": "hawq"}}}).precision["compression_ratio"] == 1.5


def test_rb_sparsity_int8_list_in_order():
    specs = NNCFConfig.from_dict(ex.RESNET50_RB_SPARSITY_INT8).algorithm_specs()
    assert [type(s) for s in specs] == [AlgorithmSpec, QuantizationSpec]
    assert specs[0].name == "rb_sparsity"
    assert specs[0].section["params"]["sparsity_target"] == 0.61 and specs[0].section["sparsity_init"] == 0.01
    assert specs[1].range_init[0].num_init_samples == 850


def test_mobilenet_rb_sparsity_int8_min_max():
    specs = NNCFConfig.from_dict(ex.MOBILENET_V2_RB_SPARSITY_INT8).algorithm_specs()
    assert specs[1].range_init == (RangeInitSpec("min_max", 256),)
    assert len(specs[0].section["ignored_scopes"]) == 1
    assert specs[1].ignored_scopes == ()  # the sparsity section's scopes stay with it


def test_pruning_and_binarization_specs():
    (pruning,) = NNCFConfig.from_dict(ex.RESNET50_PRUNING_GM).algorithm_specs()
    assert pruning == AlgorithmSpec("filter_pruning", ex.RESNET50_PRUNING_GM["compression"])
    (legr,) = NNCFConfig.from_dict(ex.RESNET18_PRUNING_LEGR).algorithm_specs()
    assert legr.section["params"]["legr_params"]["generations"] == 200
    (binar,) = NNCFConfig.from_dict(ex.RESNET18_BINARIZATION_XNOR).algorithm_specs()
    assert binar.name == "binarization" and binar.section["params"]["weights_quant_start_epoch"] == 30
    kd = NNCFConfig.from_dict(ex.PRUNING_WITH_KD).algorithm_specs()
    assert [s.name for s in kd] == ["filter_pruning", "knowledge_distillation"]


def test_no_compression_section_gives_no_specs():
    assert NNCFConfig.from_dict({"input_info": {"sample_size": [1, 4]}}).algorithm_specs() == []
    assert NNCFConfig.from_dict({}).input_infos() == []


def test_input_infos_list_with_keywords():
    config = NNCFConfig.from_dict({"input_info": [
        {"sample_size": [2, 16], "type": "long", "keyword": "input_ids"},
        {"sample_size": [2, 16], "type": "long", "filler": "zeros", "keyword": "token_type_ids"},
    ]})  # fmt: skip
    assert config.input_infos() == [
        InputInfo((2, 16), "long", "ones", "input_ids"),
        InputInfo((2, 16), "long", "zeros", "token_type_ids"),
    ]


def test_global_params_apply_unless_the_algorithm_sets_its_own():
    config = NNCFConfig.from_dict({
        "ignored_scopes": ["{re}.*fc.*"], "compression_lr_multiplier": 2.0,
        "compression": [
            {"algorithm": "quantization"},
            {"algorithm": "rb_sparsity", "ignored_scopes": "conv1", "compression_lr_multiplier": 5.0},
            {"algorithm": "knowledge_distillation", "type": "mse"},
        ],
    })  # fmt: skip
    quant, rb, kd = config.algorithm_specs()
    assert quant.ignored_scopes == ("{re}.*fc.*",) and quant.compression_lr_multiplier == 2.0
    assert rb.section["ignored_scopes"] == "conv1" and rb.section["compression_lr_multiplier"] == 5.0
    assert "ignored_scopes" not in kd.section  # KD has no scopes: nothing injected
    assert config.get_redefinable_global_param_value_for_algo("compression_lr_multiplier", "rb_sparsity") == 5.0
    assert config.get_redefinable_global_param_value_for_algo("compression_lr_multiplier", "quantization") == 2.0
    assert "ignored_scopes" not in config["compression"][0]  # the config itself is not rewritten


def test_scopes_string_becomes_tuple():
    spec = _spec({"target_scopes": "{re}.*conv.*", "weights": {"ignored_scopes": ["a", "b"]}})
    assert spec.target_scopes == ("{re}.*conv.*",) and spec.weights.ignored_scopes == ("a", "b")


def test_range_list_per_group():
    spec = _spec({"initializer": {"range": [
        {"type": "min_max", "num_init_samples": 64, "target_quantizer_group": "weights"},
        {"type": "percentile", "target_scopes": ["{re}.*conv.*"], "target_quantizer_group": "activations",
         "params": {"min_percentile": 1, "max_percentile": 99}},
    ]}})  # fmt: skip
    assert spec.range_init == (
        RangeInitSpec("min_max", 64, target_quantizer_group="weights"),
        RangeInitSpec("percentile", 256, 1.0, 99.0, ("{re}.*conv.*",), (), "activations"),
    )


def test_scope_overrides_and_unified_scale_ops_kept():
    overrides = {
        "weights": {"{re}.*conv1.*": {"bits": 4, "mode": "asymmetric"}},
        "activations": {"x": {"initializer": {"range": {"type": "threesigma"}}}},
    }
    spec = _spec({"scope_overrides": overrides, "activations": {"unified_scale_ops": [["a", "b"]]}})
    assert spec.scope_overrides == overrides and spec.scope_overrides is not overrides
    assert spec.activations.unified_scale_ops == (("a", "b"),)


def test_specs_are_frozen():
    spec = _spec({})
    with pytest.raises(AttributeError):
        spec.preset = "mixed"
    with pytest.raises(AttributeError):
        spec.weights.bits = 4


def test_from_dict_does_not_modify_the_callers_dict():
    original = copy.deepcopy(ex.RESNET50_RB_SPARSITY_INT8)
    given = copy.deepcopy(original)
    config = NNCFConfig.from_dict(given)
    config.algorithm_specs()
    config["compression"][1]["initializer"]["range"]["num_init_samples"] = 1
    assert given == original
    assert given["compression"][1]["initializer"]["range"] is not config["compression"][1]["initializer"]["range"]


def test_from_json_with_comments_urls_and_trailing_commas(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        """{
    // a line comment
    "model": "resnet50",  // trailing comment
    "pretrained_url": "https://example.com/weights//resnet50.pth", /* a "quoted" // block
       comment spanning lines */
    "note": "a /* not a comment */ and an escaped quote \\" // still a string",
    "input_info": {"sample_size": [1, 3, 224, 224],},
    "compression": {
        "algorithm": "quantization",
        "initializer": {"range": {"num_init_samples": 850}}, // last
    },
}
"""
    )
    config = NNCFConfig.from_json(path)
    assert config["pretrained_url"] == "https://example.com/weights//resnet50.pth"
    assert config["note"] == 'a /* not a comment */ and an escaped quote " // still a string'
    assert config.algorithm_specs()[0].range_init[0].num_init_samples == 850
    assert config.input_infos()[0].sample_size == (1, 3, 224, 224)


def test_from_json_accepts_str_path(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"compression": {"algorithm": "quantization"}}')
    assert NNCFConfig.from_json(str(path)).algorithm_specs()[0].preset == "performance"


def test_from_json_bad_json_names_path_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  // comment\n  "a": 1\n  "b": 2\n}\n')
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_json(path)
    message = str(info.value)
    assert str(path) in message and "line 4, column 3" in message and '"b": 2' in message


def test_from_json_unterminated_comment(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1 /* never closed\n}')
    with pytest.raises(ConfigError, match="line 1, column 9: unterminated /\\* comment"):
        NNCFConfig.from_json(path)


def test_from_json_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        NNCFConfig.from_json(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
    with pytest.raises(ConfigError, match="is a directory"):
        NNCFConfig.from_json(tmp_path)


def test_from_json_invalid_config_names_file_and_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"compression": {"algorithm": "quantization", "preset": "mixd"}}')
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_json(path)
    assert str(info.value).startswith(f"{path}: compression.preset: 'mixd' is not valid (did you mean 'mixed'?)")


class _Struct:
    def __init__(self, value):
        self.value = value


class _OtherStruct:
    pass


def test_extra_structs():
    config = NNCFConfig.from_dict({})
    assert not config.has_extra_struct(_Struct)
    with pytest.raises(ConfigError, match="no _Struct is registered.*register_default_init_args"):
        config.get_extra_struct(_Struct)
    config.register_extra_structs([_Struct(1)])
    config.register_extra_structs([_Struct(2)])  # a later one of the same type replaces the earlier
    assert config.has_extra_struct(_Struct) and config.get_extra_struct(_Struct).value == 2
    assert not config.has_extra_struct(_OtherStruct)
    assert len(config.get_all_extra_structs()) == 1


def test_copies_share_structs_but_not_data():
    config = NNCFConfig.from_dict(ex.RESNET50_INT8)
    struct = _Struct([1, 2, 3])
    config.register_extra_structs([struct])
    for clone in (copy.deepcopy(config), config.copy()):
        assert isinstance(clone, NNCFConfig) and clone == config
        assert clone.get_extra_struct(_Struct) is struct
    deep = copy.deepcopy(config)
    deep["compression"]["initializer"]["range"]["num_init_samples"] = 1
    assert config["compression"]["initializer"]["range"]["num_init_samples"] == 850


def test_pickle_round_trip():
    config = NNCFConfig.from_dict(ex.RESNET50_INT8)
    config.register_extra_structs([_Struct(3)])
    clone = pickle.loads(pickle.dumps(config))
    assert clone == config and clone.get_extra_struct(_Struct).value == 3


def test_plain_constructor_is_unvalidated_but_specs_validate():
    config = NNCFConfig({"compression": {"algorithm": "quantization", "preset": "fast"}})
    with pytest.raises(ConfigError, match="compression.preset"):
        config.algorithm_specs()
