"""Hutchinson estimate of the average Hessian trace of a loss per tensor (HAWQ-v2, §3.1).

For a Rademacher vector ``v`` (±1 entries), ``E[vᵀ H v] = tr(H)``. Each iteration draws one ``v`` per
tensor, accumulates ``H v`` over the data batches (two backward passes per batch: the gradient with
``create_graph`` and its product with ``v``, weighted by batch size, so ``H`` is the Hessian of the mean
loss over every sample), and records ``vᵀ H v / numel`` per tensor. The traces are the running mean over
iterations; iterating stops after ``iter_number`` iterations or when the relative change of the mean
over all tensors drops below ``tolerance`` (denominator ``|previous| + 1e-6``, NNCF PR #2159). Unlike
NNCF, the ``H v`` accumulator starts at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nncompress.errors import CalibrationError

# closure(batch index) -> (mean loss of the batch, the tensors to differentiate by, batch size)
LossClosure = Callable[[int], tuple[torch.Tensor, Sequence[torch.Tensor], int]]


def rademacher_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A ±1 tensor of ``tensor``'s shape, dtype and device."""
    bits = torch.randint(0, 2, tuple(tensor.shape), generator=generator)
    return (bits * 2 - 1).to(device=tensor.device, dtype=tensor.dtype)


def _hessian_vector(closure: LossClosure, num_batches: int, generator: torch.Generator) -> list[float]:
    """One Hutchinson sample: ``vᵀ H v / numel`` per tensor, ``H`` averaged over the batches."""
    vectors: list[torch.Tensor] | None = None
    accumulated: list[torch.Tensor] | None = None
    total = 0
    for index in range(num_batches):
        loss, tensors, size = closure(index)
        tensors = list(tensors)
        if vectors is None:
            vectors = [rademacher_like(t, generator) for t in tensors]
            accumulated = [torch.zeros_like(t) for t in tensors]
        grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
        used = [(g, t, v) for g, t, v in zip(grads, tensors, vectors) if g is not None and g.requires_grad]
        products = torch.autograd.grad([g for g, _, _ in used], [t for _, t, _ in used],
                                       grad_outputs=[v for _, _, v in used], allow_unused=True) if used else []
        by_tensor = {id(t): p for (_, t, _), p in zip(used, products)}
        for i, t in enumerate(tensors):
            product = by_tensor.get(id(t))
            if product is not None:
                accumulated[i] += product.detach() * size
        total += size
    if not total or accumulated is None:
        raise CalibrationError("the Hessian trace estimate got no data: give a non-empty init data loader")
    return [float((v * (h / total)).sum()) / max(v.numel(), 1) for v, h in zip(vectors, accumulated)]


def hutchinson_traces(closure: LossClosure, num_batches: int, iter_number: int = 200, tolerance: float = 1e-4,
                      seed: int = 0) -> tuple[list[float], int]:
    """(average Hessian trace per tensor, iterations run). ``closure(i)`` runs batch ``i`` of
    ``num_batches`` and returns its mean loss, the tensors (in a fixed order) and the batch size."""
    if num_batches < 1 or iter_number < 1:
        raise CalibrationError(f"the Hessian trace estimate needs at least one batch and one iteration; got "
                               f"num_batches={num_batches}, iter_number={iter_number}")
    generator = torch.Generator()  # on the CPU: the same vectors on every device
    generator.manual_seed(seed)
    means: list[float] | None = None
    previous = None
    done = 0
    for done in range(1, iter_number + 1):
        sample = _hessian_vector(closure, num_batches, generator)
        means = sample if means is None else [m + (s - m) / done for m, s in zip(means, sample)]
        overall = sum(means) / len(means) if means else 0.0
        if previous is not None and abs(overall - previous) / (abs(previous) + 1e-6) < tolerance:
            break
        previous = overall
    return means or [], done


def exact_hessian_traces(loss_fn: Callable[[], torch.Tensor], tensors: Sequence[torch.Tensor]) -> list[float]:
    """Average Hessian trace per tensor by autograd, one Hessian row at a time (small models only)."""
    result = []
    for tensor in tensors:
        grad = torch.autograd.grad(loss_fn(), tensor, create_graph=True)[0].reshape(-1)
        diagonal = 0.0
        for i in range(grad.numel()):
            row = torch.autograd.grad(grad[i], tensor, retain_graph=True)[0].reshape(-1)
            diagonal += float(row[i])
        result.append(diagonal / max(tensor.numel(), 1))
    return result
