"""Per-user LoRA adapters: one import for the three modules they live in.

* ``models.adapter_manifest``: the :class:`Manifest` of a version and its integrity checks
  (safetensors only, weights as the manifest recorded them: ``verify_adapter_files``);
* ``models.adapter_store``: :class:`AdapterStore`, the versions on disk
  (``<root>/<user>/v<N>/``, ``latest``; candidate, promoted, rejected, rolled back), and
  the ``promotion_gate``;
* ``models.adapter_load``: ``load_adapter``, which wraps a base model with a verified
  version and checks that it changes the logits.

Every name keeps working from here (``from models.adapters import AdapterStore, load_adapter``).
"""

from __future__ import annotations

from models.adapter_load import AdapterNotAppliedError, load_adapter
from models.adapter_manifest import (MANIFEST, WEIGHTS, AdapterIntegrityError, Evaluation, Manifest, Status,
                                     training_data_digest, verify_adapter_files, weights_sha256)
from models.adapter_store import LATEST, AdapterStore, promotion_gate

__all__ = [
    "AdapterIntegrityError",
    "AdapterNotAppliedError",
    "AdapterStore",
    "Evaluation",
    "LATEST",
    "MANIFEST",
    "Manifest",
    "Status",
    "WEIGHTS",
    "load_adapter",
    "promotion_gate",
    "training_data_digest",
    "verify_adapter_files",
    "weights_sha256",
]
