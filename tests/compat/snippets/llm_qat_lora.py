"""LLM quantization-aware training with LoRA adapters, in the shape of NNCF's torch distillation_qat_with_lora
example: INT4_ASYM group 64 with compression_format=FQ_LORA, distillation from the float model (KL of the
logits), a checkpoint with get_config / load_from_config, then strip to the DQ format. A tiny random Llama
stands in for the model the example downloads."""

import copy

import nncf
import nncf.torch
import torch
import torch.nn.functional as F
from nncf.parameters import CompressionFormat, CompressWeightsMode, StripFormat
from nncf.quantization.advanced_parameters import AdvancedCompressionParameters
from nncf.torch import load_from_config
from transformers import LlamaConfig, LlamaForCausalLM

config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()
teacher = copy.deepcopy(model)  # the float model: the teacher of the distillation
input_ids = torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1))
model_input = {"input_ids": input_ids[:1]}

model = nncf.compress_weights(
    model,
    mode=CompressWeightsMode.INT4_ASYM,
    group_size=64,
    dataset=nncf.Dataset([model_input]),
    compression_format=CompressionFormat.FQ_LORA,
    advanced_parameters=AdvancedCompressionParameters(lora_adapter_rank=8),
)

# train the LoRA adapters and the quantization scales only (the scales with a much smaller step)
model.requires_grad_(False)
adapters = [p for name, p in model.named_parameters() if "lora_A" in name or "lora_B" in name]
scales = [p for name, p in model.named_parameters() if name.endswith("scale")]
for param in adapters + scales:
    param.requires_grad_(True)
assert adapters and scales, "no LoRA adapters or scales to train"
optimizer = torch.optim.AdamW([{"params": adapters, "lr": 1e-3}, {"params": scales, "lr": 1e-5}], weight_decay=0.0)


def kl_div(student_logits, teacher_logits):
    vocab = student_logits.shape[-1]
    return F.kl_div(F.log_softmax(student_logits.reshape(-1, vocab), dim=-1),
                    F.log_softmax(teacher_logits.reshape(-1, vocab), dim=-1), log_target=True, reduction="batchmean")


with torch.no_grad():
    teacher_logits = teacher(input_ids=input_ids).logits
    kl_before = float(kl_div(model(input_ids=input_ids).logits, teacher_logits))
model.train()
for _ in range(10):
    loss = kl_div(model(input_ids=input_ids).logits, teacher_logits)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
with torch.no_grad():
    trained_logits = model(input_ids=input_ids).logits
kl_after = float(kl_div(trained_logits, teacher_logits))
print(f"QAT with LoRA: KL to the float model {kl_before:.5f} -> {kl_after:.5f}")
assert kl_after < 0.8 * kl_before, (kl_before, kl_after)

# checkpoint and resume
checkpoint = {"nncf_config": nncf.torch.get_config(model), "model_state_dict": model.state_dict()}
resumed = load_from_config(LlamaForCausalLM(config).eval(), checkpoint["nncf_config"], model_input)
resumed.load_state_dict(checkpoint["model_state_dict"])
with torch.no_grad():
    assert torch.equal(resumed(input_ids=input_ids).logits, trained_logits)

# merge the adapters and store the weights in 4 bits
model = nncf.strip(model, do_copy=False, strip_format=StripFormat.DQ)
with torch.no_grad():
    stripped_logits = model(input_ids=input_ids).logits
    generated = model.generate(**model_input, max_new_tokens=4, do_sample=False)
assert float((stripped_logits - trained_logits).abs().max()) < 1e-3 * float(trained_logits.abs().max())
assert not [name for name, _ in model.named_parameters() if "lora" in name]
assert generated.shape[1] == model_input["input_ids"].shape[1] + 4
