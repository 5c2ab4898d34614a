"""Loading an adapter version onto a base model, checked: its files first, then that it changes the logits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.adapter_manifest import verify_adapter_files

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

__all__ = ["AdapterNotAppliedError", "load_adapter"]


class AdapterNotAppliedError(RuntimeError):
    """A loaded adapter leaves the model's logits unchanged (a silent no-op)."""


def load_adapter(model: PreTrainedModel, path: Path, *, min_logit_change: float = 1e-6) -> PeftModel:
    """Wrap ``model`` with the adapter in ``path`` and check that it is really applied.

    First the files are checked (``verify_adapter_files``: ``AdapterIntegrityError`` for
    pickled weights, no safetensors, or weights that differ from the manifest). The check runs a fixed probe input with the adapter and again inside peft's
    ``disable_adapter()``; if no logit moves by more than ``min_logit_change``, the
    adapter is a silent no-op (wrong target module names, weights not loaded, or an
    untrained adapter whose B matrices are still zero) and
    ``AdapterNotAppliedError`` is raised (after unwrapping ``model`` again). Like
    training, this wraps ``model`` in place; ``unload()`` gives it back. Returned in
    eval mode.
    """
    import torch
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise ValueError(
            f"load_adapter(path={str(path)!r}) holds no adapter_config.json; pass AdapterStore.path(user, v)"
        )
    verify_adapter_files(path)  # safetensors only, weights as the manifest recorded them
    peft_model = PeftModel.from_pretrained(model, str(path))  # verified: it can only read the safetensors file
    peft_model.eval()
    vocab = peft_model.get_input_embeddings().num_embeddings
    # Fixed, tokenizer-independent probe: 16 ids spread over the vocabulary.
    probe = (torch.arange(1, 17) * 7919 % vocab).unsqueeze(0)
    with torch.inference_mode():
        with_adapter = peft_model(input_ids=probe).logits
        with peft_model.disable_adapter():
            without = peft_model(input_ids=probe).logits
    change = (with_adapter - without).abs().max().item()
    if not change > min_logit_change:
        peft_model.unload()  # leave the caller's model as it was
        raise AdapterNotAppliedError(
            f"adapter {str(path)!r} changes the logits by at most {change:.3g} (<= {min_logit_change:g}): "
            "it is not applied (target modules missing from this model, all-zero weights, or an untrained "
            "adapter); check that it was trained for this base model"
        )
    return peft_model
