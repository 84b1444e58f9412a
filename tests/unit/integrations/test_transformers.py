"""The Hugging Face Trainer integration: the scheduler steps with the Trainer, the compression loss is added to the
task loss, and the compressed model is exported at the end of training and runs in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import nncompress as nncf  # noqa: E402
from nncompress.errors import ValidationError  # noqa: E402
from nncompress.integrations.transformers import CompressionCallback, CompressionTrainer  # noqa: E402

LENGTH, VOCAB = 8, 64


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; label 1 when token 7 occurs."""

    def __init__(self, count: int = 32):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (count, LENGTH), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        ids = self.ids[index]
        return {"input_ids": ids, "labels": int((ids == 7).any())}


def _model_and_ctrl():
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    nncf_config = nncf.NNCFConfig.from_dict({
        "input_info": [{"sample_size": [1, LENGTH], "type": "long", "keyword": "input_ids"}],
        "compression": [
            {"algorithm": "rb_sparsity", "sparsity_init": 0.1,
             "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 2}},
            {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        ],
    })
    return nncf.create_compressed_model(model, nncf_config)


def _args(tmp_path, **kwargs):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=2, learning_rate=1e-3,
        logging_steps=2, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, **kwargs,
    )


@pytest.mark.slow
def test_trainer_steps_the_scheduler_adds_the_loss_and_exports(tmp_path):
    ctrl, model = _model_and_ctrl()
    path = tmp_path / "bert_int8.onnx"
    trainer = CompressionTrainer(model=model, args=_args(tmp_path), train_dataset=Tokens(), compression_ctrl=ctrl,
                                 export_path=path)
    batch = {"input_ids": Tokens().ids[:4], "labels": torch.tensor([0, 1, 0, 1])}
    model.eval()  # no dropout, RB sparsity's deterministic masks
    task = model(**batch).loss
    assert float(ctrl.loss().detach()) > 0  # RB sparsity's term
    torch.testing.assert_close(trainer.compute_loss(model, batch), task + ctrl.loss())

    trainer.train()
    assert ctrl.scheduler.current_step == 7 and ctrl.scheduler.current_epoch == 1  # 2 epochs of 4 steps, from -1
    logged = [entry for entry in trainer.state.log_history if "compression_loss" in entry]
    assert len(logged) >= 4 and all(entry["compression_loss"] > 0 for entry in logged)  # every 2 steps, and the end
    assert trainer.compression_callback.exported == path and path.exists()

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = Tokens().ids[:1]
    feed = {session.get_inputs()[0].name: ids.numpy()}
    onnx_logits = session.run(None, feed)[0]
    with torch.no_grad():
        torch_logits = ctrl.strip().eval()(input_ids=ids).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=0.05 * float(np.abs(torch_logits).max()) + 1e-3)


@pytest.mark.slow
def test_callback_alone_with_a_plain_trainer(tmp_path):
    ctrl, model = _model_and_ctrl()
    callback = CompressionCallback(ctrl)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=3), train_dataset=Tokens(),
                                   callbacks=[callback])
    trainer.train()
    assert ctrl.scheduler.current_step == 2 and callback.exported is None


def test_a_controller_is_required():
    with pytest.raises(ValidationError, match="compression_ctrl must be the controller create_compressed_model"):
        CompressionCallback(object())


def test_a_clear_error_without_transformers(monkeypatch):
    import importlib
    import sys

    import nncompress.errors

    monkeypatch.setitem(sys.modules, "transformers", None)  # what an absent package looks like to import
    monkeypatch.delitem(sys.modules, "nncompress.integrations.transformers")
    with pytest.raises(nncompress.errors.ModuleNotFoundError, match="needs the transformers package: pip install"):
        importlib.import_module("nncompress.integrations.transformers")
    assert "transformers" not in nncf.__dict__  # importing nncompress never imports it
