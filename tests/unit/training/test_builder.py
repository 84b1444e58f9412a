"""create_compressed_model: one capture, a new model of the user's class, refusals and clear errors."""

import pytest
import torch

import nncompress as nncf
from nncompress.backends.torch.hooks import storage_of
from nncompress.backends.torch.qat import BaseQATQuantizer
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.training.controller import CompositeCompressionAlgorithmController, CompressionStage
from tests.unit.training.models import SmallCNN

NO_INIT = {"initializer": {"range": {"num_init_samples": 0}}}


def _config(**quantization):
    section = {"algorithm": "quantization", **NO_INIT, **quantization}
    return nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section})


def test_returns_a_new_model_of_the_users_class_and_leaves_the_input_alone():
    torch.manual_seed(0)
    model = SmallCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl, compressed = nncf.create_compressed_model(model, _config())
    assert compressed is not model
    assert isinstance(compressed, SmallCNN) and compressed.note == "user attribute"
    assert compressed.describe() == "SmallCNN(user attribute)"
    assert storage_of(model) is None and "forward" not in model.__dict__  # NNCF would wrap in place
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert ctrl.model is compressed
    # 3 activation quantizers (the input; relu 1 feeding conv2; relu 2, moved up through max-pool, feeding fc)
    names = sorted(ctrl.quantizers())
    assert names == ["conv1/conv2d/0/fq_weights_1", "conv2/conv2d/0/fq_weights_1", "fc/linear/0/fq_weights_1",
                     "relu/0/fq_output_0", "relu/1/fq_output_0", "x/fq_output_0"]
    assert all(isinstance(q, BaseQATQuantizer) for q in ctrl.quantizers().values())


def test_state_dict_names_are_stable_across_builds():
    keys = [list(nncf.create_compressed_model(SmallCNN(), _config())[1].state_dict()) for _ in range(2)]
    assert keys[0] == keys[1]
    assert "_nncompress_hooks.hooks.conv1/conv2d/0/fq_weights_1.scale" in keys[0]


def test_refuses_an_already_compressed_model():
    _, compressed = nncf.create_compressed_model(SmallCNN(), _config())
    with pytest.raises(ValidationError, match="already compressed"):
        nncf.create_compressed_model(compressed, _config())


def test_other_algorithms_are_not_implemented_yet_only_when_used(monkeypatch):
    from nncompress.training import builder

    # every schema algorithm has a builder now: register one whose module is absent
    monkeypatch.setitem(builder.BUILDERS, "knowledge_distillation", "nncompress.training.not_there.builder:Builder")
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": [{"algorithm": "quantization"}, {"algorithm": "knowledge_distillation", "type": "mse"}],
    })
    with pytest.raises(UnsupportedBackendError, match="knowledge_distillation.*not implemented yet"):
        nncf.create_compressed_model(SmallCNN(), config)


def test_without_input_info_or_loader_the_error_names_input_info():
    config = nncf.NNCFConfig.from_dict({"compression": {"algorithm": "quantization"}})
    with pytest.raises(ValidationError, match="input_info"):
        nncf.create_compressed_model(SmallCNN(), config)


def test_example_input_from_the_registered_loader():
    data = [(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)) for _ in range(2)]
    config = nncf.NNCFConfig.from_dict({"compression": {"algorithm": "quantization", **NO_INIT}})
    config = nncf.torch.register_default_init_args(config, data)
    ctrl, compressed = nncf.create_compressed_model(SmallCNN(), config)
    assert len(ctrl.quantizers()) == 6
    assert compressed(data[0][0]).shape == (4, 10)


def test_dummy_forward_fn_is_refused_with_a_pointer_to_input_info():
    with pytest.raises(UnsupportedBackendError, match="input_info"):
        nncf.create_compressed_model(SmallCNN(), _config(), dummy_forward_fn=lambda m: m(torch.ones(1, 1, 8, 8)))


def test_not_a_module_is_refused():
    with pytest.raises(nncf.UnsupportedModelError, match="torch.nn.Module"):
        nncf.create_compressed_model(object(), _config())


def test_config_without_compression_gives_an_uncompressed_copy():
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}})
    model = SmallCNN()
    ctrl, plain = nncf.create_compressed_model(model, config)
    assert plain is not model and storage_of(plain) is None
    assert ctrl.compression_stage() is CompressionStage.UNCOMPRESSED
    assert float(ctrl.loss()) == 0.0


def test_two_algorithms_give_a_composite_controller(monkeypatch):
    from nncompress.training import builder
    from nncompress.training.controller import CompressionAlgorithmController

    class _SecondController(CompressionAlgorithmController):
        name = "const_sparsity"

    class _Second:
        name = "const_sparsity"

        def __init__(self, spec, state):
            pass

        def edits(self, graph, names, capabilities):
            return []

        def build_controller(self, model):
            return _SecondController(model)

    real = builder._make_builder
    monkeypatch.setattr(builder, "_make_builder",
                        lambda spec, state: real(spec, state) if spec.name == "quantization" else _Second(spec, state))
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": [{"algorithm": "quantization", **NO_INIT}, {"algorithm": "const_sparsity"}],
    })
    ctrl, _ = nncf.create_compressed_model(SmallCNN(), config)
    assert isinstance(ctrl, CompositeCompressionAlgorithmController)
    assert len(ctrl.children) == 2 and len(ctrl.quantizers()) == 6
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED
    assert float(ctrl.loss()) == 0.0
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    assert [c.scheduler.current_epoch for c in ctrl.children] == [0, 0]
    assert set(ctrl.get_compression_state()["builder_state"]) == {"quantization", "const_sparsity"}


def test_hugging_face_generate_still_works():
    from tests.unit.backends.torch.tiny_transformers import tiny_gpt2

    model = tiny_gpt2()
    config = nncf.NNCFConfig.from_dict({
        "input_info": [{"sample_size": [1, 8], "type": "long", "keyword": "input_ids"}],
        "compression": {"algorithm": "quantization", **NO_INIT},
    })
    _, compressed = nncf.create_compressed_model(model, config)
    assert isinstance(compressed, type(model))
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(0))
    out = compressed.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 9) and torch.equal(out[:, :6], ids)


def test_plain_state_dict_as_compression_state_is_loaded_strictly():
    ctrl, compressed = nncf.create_compressed_model(SmallCNN(), _config())
    with torch.no_grad():
        for q in ctrl.quantizers().values():
            for p in q.parameters():
                p.mul_(0.5)
    _, again = nncf.create_compressed_model(SmallCNN(), _config(), compression_state=compressed.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), compressed.state_dict().values()))


def test_dump_graphs_writes_the_captured_graph(tmp_path):
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]}, "log_dir": str(tmp_path),
        "compression": {"algorithm": "quantization", **NO_INIT},
    })
    nncf.create_compressed_model(SmallCNN(), config, dump_graphs=True)
    assert "conv1/conv2d/0" in (tmp_path / "original_graph.txt").read_text()


def test_nncf_names_and_module_paths_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys, nncompress as nncf\n"
        "from nncompress import Config, NNCFConfig, create_compressed_model, load_state, register_default_init_args\n"
        "from nncompress.config import NNCFConfig as C2\n"
        "from nncompress.api.compression import CompressionStage\n"
        "from nncompress.torch.initialization import PTInitializingDataLoader\n"
        "assert Config is NNCFConfig is C2 is nncf.torch.NNCFConfig\n"
        "assert nncf.torch.create_compressed_model is create_compressed_model\n"
        "assert nncf.torch.register_default_init_args is register_default_init_args\n"
        "assert nncf.torch.load_state is load_state and CompressionStage.FULLY_COMPRESSED == 2\n"
        "assert 'torch' not in sys.modules, 'import nncompress imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
