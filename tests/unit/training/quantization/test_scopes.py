"""NNCF scope strings for captured nodes and scope matching."""

import pytest
import torch
from torch import nn

from nncompress.backends.registry import get_adapter
from nncompress.errors import ValidationError
from nncompress.training.quantization.scopes import check_scopes, matching_nodes, node_names, scope_matches


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(_Block(), _Block())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.layers(x).flatten(1))


@pytest.fixture(scope="module")
def names():
    model = _Net()
    graph = get_adapter(model, example_input=torch.ones(1, 2, 2, 2)).build_graph(model)
    return node_names(graph, model)


def test_nodes_answer_to_nncf_scope_strings(names):
    assert names["layers/1/conv/conv2d/0"] == (
        "layers/1/conv/conv2d/0", "_Net/Sequential[layers]/_Block[1]/Conv2d[conv]/conv2d_0", "layers.1.conv",
    )
    assert "/nncf_model_input_0" in names["x"]
    assert "_Net/linear_0" not in names["fc/linear/0"]


def test_plain_scopes_match_exactly_or_a_module_and_its_insides(names):
    found = matching_nodes(["_Net/Sequential[layers]/_Block[0]"], names)
    assert set(found) == {"layers/0/conv/conv2d/0", "layers/0/relu/0"}
    assert set(matching_nodes(["_Net/NNCFLinear[fc]/linear_0"], names)) == {"fc/linear/0"}  # NNCF-wrapped name
    assert set(matching_nodes(["layers.1"], names)) == {"layers/1/conv/conv2d/0", "layers/1/relu/0"}
    assert not scope_matches("_Net/Sequential[layers]/_Block[0]/Conv", names["layers/0/conv/conv2d/0"])


def test_regex_scopes_are_searched(names):
    found = matching_nodes(["{re}.*Conv2d\\[conv\\]/conv2d_0$"], names)
    assert set(found) == {"layers/0/conv/conv2d/0", "layers/1/conv/conv2d/0"}
    with pytest.raises(ValidationError, match="regular expression"):
        scope_matches("{re}[", ("a",))


def test_validate_scopes_names_the_unmatched_scope_and_shows_examples(names):
    with pytest.raises(ValidationError, match=r"ignored_scopes: scope 'Net/Conv2d\[nope\]' matches no operation.*"
                       r"_Net/Sequential\[layers\]"):
        check_scopes(["Net/Conv2d[nope]"], names, "ignored_scopes")
    check_scopes(["{re}fc"], names, "ignored_scopes")
