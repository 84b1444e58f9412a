"""FilterPruningBuilder: edits on the one capture, feasibility rules and scopes, skipped-group log, params."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from nncompress.errors import ConfigError, UnsupportedBackendError, ValidationError
from nncompress.graph.edits import MaskChannels, Stage
from nncompress.training.builder import create_compressed_model
from tests.unit.training.pruning.helpers import config, model


def _groups(ctrl) -> list[list[str]]:
    return [g.producers for g in ctrl.channels.groups.prunable()]


def test_masks_are_pruning_mask_edits_on_every_weight_bias_and_norm_of_the_prunable_groups(monkeypatch):
    from nncompress.backends.torch import adapter as adapter_module
    from nncompress.training.pruning.builder import FilterPruningBuilder

    seen, captures = [], []
    original_edits = FilterPruningBuilder.edits
    original_capture = adapter_module.capture_graph

    def spy(self, graph, names, capabilities):
        result = original_edits(self, graph, names, capabilities)
        seen.extend(result)
        return result

    monkeypatch.setattr(FilterPruningBuilder, "edits", spy)
    def counting_capture(*args, **kwargs):
        captures.append(1)
        return original_capture(*args, **kwargs)

    monkeypatch.setattr(adapter_module, "capture_graph", counting_capture)
    ctrl, compressed = create_compressed_model(model(), config())
    assert len(captures) == 1  # the groups come from create_compressed_model's own capture
    assert all(isinstance(e, MaskChannels) and e.stage is Stage.PRUNING_MASK for e in seen)
    places = {(e.node, e.port, e.dim) for e in seen}
    # stem+project (residual add), expand (+bn1, dw, bn2), branch, down; the head reaches the output
    assert _groups(ctrl) == [["stem/conv2d/0", "project/conv2d/0"], ["expand/conv2d/0"], ["branch/conv2d/0"],
                             ["down/conv2d/0"]]
    assert ("stem/conv2d/0", 1, 0) in places and ("stem/conv2d/0", 2, 0) in places  # weight and bias filters
    assert ("expand/conv2d/0", 1, 1) in places  # input channels of a consumer
    assert ("dw/conv2d/0", 1, 0) in places and ("dw/conv2d/0", 1, 1) not in places  # depthwise follows
    assert ("head/linear/0", 1, 1) in places  # flatten into Linear: blocks of input features
    assert all(np.all(e.mask) for e in seen)  # all ones; the controller sets them
    from nncompress.backends.torch.hooks import storage_of

    storage = storage_of(compressed)
    assert {e.name for e in seen} == set(storage.keys)


def test_every_group_that_cannot_be_pruned_is_logged_with_its_reason(caplog):
    caplog.set_level(logging.INFO, logger="nncompress")
    params = {"prune_first_conv": False, "prune_downsample_convs": False}
    ctrl, _ = create_compressed_model(model(), config(params, ignored_scopes=["branch"]))
    lines = [r.getMessage() for r in caplog.records if "is not pruned" in r.getMessage()]
    assert any("stem/conv2d/0" in line and "first convolution" in line for line in lines), lines
    assert any("branch/conv2d/0" in line and "ignored scope" in line for line in lines), lines
    assert any("down/conv2d/0" in line and "downsampling conv" in line for line in lines), lines
    assert any("head/linear/0" in line and "model output" in line for line in lines), lines
    assert len(lines) == len(ctrl.channels.groups) - len(ctrl.channels.groups.prunable()) == 4
    assert _groups(ctrl) == [["expand/conv2d/0"]]


def test_target_scopes_limit_pruning_to_the_matched_producers():
    ctrl, _ = create_compressed_model(model(), config(target_scopes=["{re}expand|down"]))
    assert _groups(ctrl) == [["expand/conv2d/0"], ["down/conv2d/0"]]


def test_an_unmatched_scope_is_refused_unless_validate_scopes_is_false():
    with pytest.raises(ValidationError, match="nothing_like_this"):
        create_compressed_model(model(), config(ignored_scopes=["nothing_like_this"]))
    ctrl, _ = create_compressed_model(model(), config(ignored_scopes=["nothing_like_this"], validate_scopes=False))
    assert len(_groups(ctrl)) == 4


def test_prune_batch_norms_false_leaves_norm_parameters_unmasked():
    from nncompress.backends.torch.hooks import storage_of

    _, compressed = create_compressed_model(model(), config({"prune_batch_norms": False}))
    names = set(storage_of(compressed).keys)
    assert not any(name.startswith(("bn1/", "bn2/", "bn3/")) for name in names)
    assert "dw/conv2d/0/pruning_mask_1_0" in names


@pytest.mark.parametrize(
    ("params", "section", "error", "match"),
    [
        ({"pruning_target": 0.5, "pruning_flops_target": 0.3}, {}, ConfigError, "mutually exclusive"),
        ({"interlayer_ranking_type": "learned_ranking"}, {}, UnsupportedBackendError, "LeGR"),
        ({"schedule": "exponential_with_bias", "pruning_target": 0.4}, {"pruning_init": 0.35}, ValidationError,
         "0.75"),
        ({"pruning_target": 0.3}, {"pruning_init": 0.5}, ValidationError, "pruning_init"),
    ],
)
def test_bad_params_are_refused_with_the_offending_value(params, section, error, match):
    with pytest.raises(error, match=match):
        create_compressed_model(model(), config(params, **section))


def test_the_default_importance_is_l2_and_filter_importance_picks_another():
    from nncompress.training.pruning.params import parse_params

    assert parse_params({"algorithm": "filter_pruning"}).importance == "l2"
    assert parse_params({"params": {"filter_importance": "geometric_median"}}).importance == "geometric_median"
    defaults = parse_params({})
    assert (defaults.target, defaults.schedule, defaults.pruning_steps, defaults.prune_batch_norms) == (
        0.5, "exponential", 100, True)
