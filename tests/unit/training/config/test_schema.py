"""Schema validation: every kind of bad input is a ConfigError naming its key path and the valid choices."""

import copy
import json

import jsonschema
import pytest

from nncompress.errors import ConfigError, ValidationError
from nncompress.training.config import NNCFConfig
from nncompress.training.config.schema import SCHEMA_PATH, algorithm_names, format_path, load_schema

from .example_configs import ALL, RESNET50_RB_SPARSITY_INT8


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_dict(config)
    return str(info.value)


def _quant(**section) -> dict:
    return {"compression": {"algorithm": "quantization", **section}}


def test_schema_is_data_and_a_valid_json_schema():
    doc = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc == load_schema()
    assert algorithm_names() == (
        "quantization", "magnitude_sparsity", "rb_sparsity", "const_sparsity", "filter_pruning", "binarization",
        "knowledge_distillation",
    )  # fmt: skip
    for name in algorithm_names():
        assert f"algorithm:{name}" in doc["$defs"]


def test_quantization_schema_has_every_reference_key():
    props = load_schema()["$defs"]["algorithm:quantization"]["properties"]
    assert set(props) == {
        "algorithm", "initializer", "weights", "activations", "preset", "quantize_inputs", "quantize_outputs",
        "scope_overrides", "overflow_fix", "export_to_onnx_standard_ops", "params", "ignored_scopes",
        "target_scopes", "validate_scopes", "compression_lr_multiplier",
    }  # fmt: skip
    defs = load_schema()["$defs"]
    assert set(defs["quantization_initializer"]["properties"]) == {"range", "batchnorm_adaptation", "precision"}
    assert set(defs["staged_params"]["properties"]) == {
        "batch_multiplier", "activations_quant_start_epoch", "weights_quant_start_epoch", "lr_poly_drop_start_epoch",
        "lr_poly_drop_duration_epochs", "disable_wd_start_epoch", "base_lr", "base_wd",
    }  # fmt: skip
    assert defs["range_init_entry"]["properties"]["type"]["enum"] == [
        "mixed_min_max", "min_max", "mean_min_max", "threesigma", "percentile", "mean_percentile",
    ]  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALL))
def test_reference_example_configs_validate(name):
    config = NNCFConfig.from_dict(ALL[name])
    assert config == ALL[name]


def test_error_is_a_validation_error():
    assert issubclass(ConfigError, ValidationError) and issubclass(ConfigError, ValueError)


def test_misspelt_algorithm_name_suggests_the_right_one():
    message = _error({"compression": {"algorithm": "quantisation"}})
    assert message.startswith("compression.algorithm: unknown algorithm 'quantisation'")
    assert "did you mean 'quantization'?" in message
    assert "'knowledge_distillation'" in message  # the valid names are listed


def test_misspelt_algorithm_in_a_list_names_its_index():
    message = _error({"compression": [{"algorithm": "quantization"}, {"algorithm": "rb_sparsty"}]})
    assert message.startswith("compression[1].algorithm: unknown algorithm 'rb_sparsty'")
    assert "did you mean 'rb_sparsity'?" in message


def test_typo_inside_quantization_lists_valid_keys():
    message = _error(_quant(quantize_input=True))
    assert message.startswith("compression.quantize_input: unknown key 'quantize_input'")
    assert "did you mean 'quantize_inputs'?" in message
    assert "'overflow_fix'" in message and "'scope_overrides'" in message


def test_typo_deep_inside_a_list_valued_compression():
    config = copy.deepcopy(RESNET50_RB_SPARSITY_INT8)
    config["compression"][1]["initializer"]["range"]["num_init_sample"] = 10
    message = _error(config)
    assert message.startswith("compression[1].initializer.range.num_init_sample: unknown key")
    assert "did you mean 'num_init_samples'?" in message


def test_bad_enum_value_names_path_value_and_choices():
    message = _error(_quant(initializer={"range": {"type": "min_maxx"}}))
    assert message.startswith("compression.initializer.range.type: 'min_maxx' is not valid")
    assert "did you mean 'min_max'?" in message
    assert "'mean_percentile'" in message


def test_bad_enum_in_a_list_valued_range():
    config = {
        "compression": [
            {"algorithm": "rb_sparsity"},
            _quant(initializer={"range": [{"type": "min_max"}, {"type": "3sigma"}]})["compression"],
        ]
    }
    message = _error(config)  # fmt: skip
    assert message.startswith("compression[1].initializer.range[1].type: '3sigma' is not valid")
    assert "'threesigma'" in message


def test_wrong_type_names_expected_and_got():
    message = _error(_quant(weights={"bits": "8"}))
    assert message == "compression.weights.bits: must be of type integer; got '8' (string)"


def test_bool_is_not_an_integer():
    assert _error(_quant(weights={"bits": True})).startswith("compression.weights.bits: must be of type integer")


def test_out_of_range_number():
    message = _error(_quant(initializer={"range": {"num_init_samples": -1}}))
    assert message == "compression.initializer.range.num_init_samples: must be >= 0; got -1"


def test_range_of_wrong_shape_says_object_or_list():
    message = _error(_quant(initializer={"range": 5}))
    assert message.startswith("compression.initializer.range: 5 is not valid; expected an object")
    assert "or a list of those" in message


def test_typo_at_root_close_to_a_known_key():
    message = _error({"comression": {"algorithm": "quantization"}})
    assert message.startswith("comression: unknown config key 'comression'; did you mean 'compression'?")
    assert _error({"input_infos": {"sample_size": [1]}}).startswith("input_infos:")


def test_unknown_root_keys_far_from_known_ones_are_kept():
    config = NNCFConfig.from_dict({"model": "resnet18", "batch_size": 8, "dataset": "cifar10", "my_flag": [1]})
    assert config["model"] == "resnet18" and config["my_flag"] == [1]


def test_bad_target_device():
    message = _error({"target_device": "VPUU"})
    assert message.startswith("target_device: 'VPUU' is not valid")
    assert "'NPU'" in message and "'CPU_SPR'" in message


def test_required_algorithm_key_missing():
    assert _error({"compression": [{"algorithm": "quantization"}, {"initializer": {}}]}) == (
        "compression[1]: the required key 'algorithm' is missing; keys here: 'initializer'"
    )


def test_required_key_inside_algorithm():
    message = _error({"compression": {"algorithm": "knowledge_distillation"}})
    assert message.startswith("compression: the required key 'type' is missing")


def test_compression_entry_must_be_an_object():
    assert _error({"compression": ["quantization"]}).startswith("compression[0]: must be of type object")


def test_scopes_wrong_item_type_names_the_index():
    assert _error({"ignored_scopes": ["a", 5]}) == "ignored_scopes[1]: must be of type string; got 5 (integer)"
    assert _error(_quant(target_scopes=3)).startswith("compression.target_scopes: 3 is not valid; expected a string")


def test_bad_regex_scope_names_the_path():
    message = _error(_quant(ignored_scopes=["conv1", "{re}conv(["]))
    assert message.startswith("compression.ignored_scopes[1]: '{re}conv([' is not a valid regular expression")


def test_scope_overrides_keys_checked():
    message = _error(_quant(scope_overrides={"weights": {"{re}.*conv.*": {"bits": 4, "mod": "asymmetric"}}}))
    assert message.startswith("compression.scope_overrides.weights.{re}.*conv.*.mod: unknown key 'mod'")
    assert "did you mean 'mode'?" in message


def test_percentiles_must_be_ordered():
    message = _error(_quant(initializer={"range": {"params": {"min_percentile": 60, "max_percentile": 40}}}))
    assert message.startswith("compression.initializer.range.params: min_percentile (60) must be below")


def test_pruning_targets_mutually_exclusive():
    config = {
        "compression": {"algorithm": "filter_pruning", "params": {"pruning_target": 0.3, "pruning_flops_target": 0.3}}
    }
    message = _error(config)  # fmt: skip
    assert message == (
        "compression.params: 'pruning_target' and 'pruning_flops_target' are mutually exclusive: set one of them"
    )


def test_unknown_key_in_later_algorithms_is_an_error():
    message = _error({"compression": {"algorithm": "magnitude_sparsity", "params": {"sparsity_targt": 0.5}}})
    assert message.startswith("compression.params.sparsity_targt: unknown key")
    assert "did you mean 'sparsity_target'?" in message
    assert _error({"compression": {"algorithm": "binarization", "mode": "xnr"}}).startswith(
        "compression.mode: 'xnr' is not valid (did you mean 'xnor'?)"
    )


def test_key_of_another_algorithm_is_rejected():
    # sparsity_init belongs to sparsity, not quantization
    assert _error(_quant(sparsity_init=0.1)).startswith("compression.sparsity_init: unknown key")


def test_input_info_errors():
    assert _error({"input_info": [{"sample_size": [1, 3]}, {"sample_size": [1, "a"]}]}) == (
        "input_info[1].sample_size[1]: must be of type integer; got 'a' (string)"
    )
    assert _error({"input_info": {"sample_size": [1], "filler": "one"}}).startswith(
        "input_info.filler: 'one' is not valid (did you mean 'ones'?)"
    )
    assert _error({"input_info": {"type": "long"}}).startswith("input_info: the required key 'sample_size'")
    assert _error({"input_info": {"shape": [1]}}).startswith("input_info.shape: unknown key")


def test_accuracy_aware_training_checked():
    message = _error({"accuracy_aware_training": {"mode": "early_exit", "params": {"maximal_total_epoch": 3}}})
    assert message.startswith("accuracy_aware_training.params.maximal_total_epoch: unknown key")


def test_non_dict_config():
    with pytest.raises(ConfigError, match="must be a JSON object"):
        NNCFConfig.from_dict([1, 2])


def test_no_raw_jsonschema_error_escapes():
    bad = [_quant(weights=[]), _quant(params={"base_lr": "x"}), {"compression": 3}, {"log_dir": 1},
           _quant(initializer={"precision": {"type": "hawq", "bitwidth_per_scope": [[4]]}})]  # fmt: skip
    for config in bad:
        with pytest.raises(ConfigError) as info:
            NNCFConfig.from_dict(config)
        assert not isinstance(info.value, jsonschema.ValidationError)
        assert info.value.__cause__ is None


def test_format_path():
    assert format_path("compression[1]", ["initializer", "range", 0, "type"]) == (
        "compression[1].initializer.range[0].type"
    )
    assert format_path("", []) == "<root>"
    assert format_path("", ["input_info", 2]) == "input_info[2]"


def test_every_schema_key_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[4] / "docs" / "training_config.md").read_text()
    missing = set()
    for definition in load_schema()["$defs"].values():
        for key in definition.get("properties", {}):
            if f"`{key}`" not in doc and f".{key}`" not in doc:
                missing.add(key)
    assert not missing, f"keys missing from docs/training_config.md: {sorted(missing)}"


def test_empty_range_list_is_an_error():
    message = _error(_quant(initializer={"range": []}))
    assert message == "compression.initializer.range: must have at least 1 items; got []"
