# ruff: noqa: E702, B007, I001  (the issue's lifecycle code is kept verbatim)
"""The issue's training-time lifecycle, run verbatim (``import nncompress as nncf``) on a small CNN and
scikit-learn digits: config from JSON with comments, init args, create, DDP wrap + distributed(),
explicit init, epoch/step loop, statistics, ONNX export run in ONNX Runtime, checkpoint, resume with
bit-identical outputs. Also: QAT reaches FP32 accuracy within 0.3 pp."""

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist

from tests.unit.training.models import SmallCNN, accuracy, digits, loader, train, trained_cnn

CONFIG_JSON = """{
    // NNCF 2.x style config; comments are allowed
    "input_info": {"sample_size": [1, 1, 8, 8]},
    "compression": {
        "algorithm": "quantization",
        /* range init from a few batches */
        "initializer": {"range": {"num_init_samples": 100}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 100}}
    }
}
"""


@pytest.fixture
def single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_issue_lifecycle_verbatim(tmp_path, monkeypatch, single_process_group):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text(CONFIG_JSON)
    torch.manual_seed(0)
    model = SmallCNN()
    original = copy.deepcopy(model)
    user_model = model
    train_loader = loader(batch_size=100, shuffle=True, limit=700)
    criterion = torch.nn.CrossEntropyLoss()
    E = 2
    p = tmp_path / "checkpoint.pth"
    optimizer = None

    # ---- the issue's code, verbatim (the `...` is followed by the optimizer step) ----
    import nncompress as nncf
    from nncompress import Config, create_compressed_model, load_state   # also NNCFConfig; also nncompress.torch.*
    nncf_config = Config.from_json("config.json")                          # NNCF 2.x JSON, // comments allowed
    nncf_config = nncf.torch.register_default_init_args(nncf_config, train_loader, criterion)
    compression_ctrl, model = create_compressed_model(model, nncf_config)  # model keeps its class
    model = torch.nn.parallel.DistributedDataParallel(model); compression_ctrl.distributed()
    compression_ctrl.initialize(train_loader)                               # optional explicit init
    for epoch in range(E):
        compression_ctrl.scheduler.epoch_step()
        for x, y in train_loader:
            compression_ctrl.scheduler.step()
            loss = criterion(model(x), y) + compression_ctrl.loss()
            ...
            optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=3e-3)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print(compression_ctrl.statistics().to_str())
    compression_ctrl.export_model("model.onnx")                             # and OpenVINO IR
    torch.save({"state_dict": model.state_dict(), "compression_state": compression_ctrl.get_compression_state()}, p)
    # ---- end of the issue's code ----

    inner = model.module
    assert isinstance(inner, SmallCNN) and inner is compression_ctrl.model
    assert compression_ctrl.scheduler.current_epoch == E - 1
    assert compression_ctrl.scheduler.current_step == E * len(train_loader) - 1
    assert inner is not user_model and "forward" not in user_model.__dict__  # the user's model stays plain
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), user_model.state_dict().values()))
    assert "Ranges initialised" in compression_ctrl.statistics().to_str()
    inner.eval()
    test_x, test_y = next(iter(loader("test", batch_size=512)))
    with torch.no_grad():
        reference = inner(test_x)
    assert accuracy(inner, loader("test")) > 0.5  # it trained (14 steps from random weights; chance is 0.1)

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: test_x.numpy()})[0]
    assert np.mean(got.argmax(1) == reference.numpy().argmax(1)) >= 0.995

    # resume: a fresh float model, the saved state, identical outputs, no re-initialisation
    ckpt = torch.load(p, weights_only=False)
    fresh_model = SmallCNN()
    config = Config.from_json("config.json")
    compression_ctrl, model = create_compressed_model(fresh_model, config, compression_state=ckpt["compression_state"])
    load_state(model, ckpt["state_dict"], is_resume=True)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(test_x), reference)
    assert compression_ctrl.scheduler.current_epoch == E - 1


@pytest.mark.slow
def test_qat_two_epochs_reaches_fp32_accuracy_within_0_3_pp():
    import nncompress as nncf

    fp32 = trained_cnn()
    test = loader("test")
    fp32_acc = accuracy(fp32, test)
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
    })
    train_loader = loader(shuffle=True)
    config = nncf.torch.register_default_init_args(config, train_loader)
    ctrl, qat = nncf.create_compressed_model(fp32, config)
    init_acc = accuracy(qat, test)
    torch.manual_seed(0)
    train(qat, train_loader, epochs=2, lr=1e-4, step_fn=ctrl.scheduler.step)
    qat_acc = accuracy(qat, test)
    train_x, _ = digits("train")
    ptq = nncf.quantize(fp32, nncf.Dataset([train_x[i:i + 64] for i in range(0, 320, 64)]))
    ptq_acc = accuracy(ptq, test)
    print(f"digits: FP32 {fp32_acc:.4f}, PTQ INT8 {ptq_acc:.4f}, QAT INT8 after range init {init_acc:.4f}, "
          f"after 2 QAT epochs {qat_acc:.4f}")
    assert qat_acc >= fp32_acc - 0.003
    assert qat_acc >= ptq_acc
    assert accuracy(ctrl.strip(), test) == qat_acc
