"""cli.common: module:attr references, number lists and sizes, the ignored scope options."""

from __future__ import annotations

import argparse

import pytest

from nncompress.cli.common import float_list, ignored_scope, resolve_reference, size_pair
from nncompress.errors import InvalidPathError, ValidationError


def test_reference_to_a_module_attribute_and_a_file_function(tmp_path):
    assert resolve_reference("os.path:join", "--x")("a", "b") == "a/b"
    script = tmp_path / "metric.py"
    script.write_text("def score(model, items):\n    return 0.25 * len(items)\n")
    assert resolve_reference(f"{script}:score", "--validate")(None, [1, 2]) == 0.5


@pytest.mark.parametrize("ref, message", [
    ("no_colon", "must look like"),
    ("os.path:", "must look like"),
    ("os.path:nothing_here", "has no attribute 'nothing_here'"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
])
def test_bad_references_name_the_value(ref, message):
    with pytest.raises(ValidationError, match=message):
        resolve_reference(ref, "--validate")


def test_missing_script_file(tmp_path):
    with pytest.raises(InvalidPathError, match="does not exist"):
        resolve_reference(f"{tmp_path / 'gone.py'}:f", "--validate")


def test_number_lists_and_sizes():
    assert float_list("123.5,116,103.25") == [123.5, 116.0, 103.25]
    assert size_pair("224") == (224, 224)
    assert size_pair("32,48") == (32, 48)
    for bad in ("0", "a,b", "1,2,3"):
        with pytest.raises(argparse.ArgumentTypeError):
            size_pair(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="'x'"):
        float_list("x")


def test_ignored_scope_from_options():
    args = argparse.Namespace(ignored_name=["a"], ignored_pattern=["b.*"], ignored_type=[],
                              no_validate_ignored_scope=True)
    scope = ignored_scope(args)
    assert (scope.names, scope.patterns, scope.types, scope.validate) == (["a"], ["b.*"], [], False)
    empty = argparse.Namespace(ignored_name=[], ignored_pattern=[], ignored_type=[], no_validate_ignored_scope=False)
    assert ignored_scope(empty) is None
