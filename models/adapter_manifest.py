"""What an adapter version is: its manifest, and the checks a version passes before its weights are read.

A version's ``manifest.json`` (:class:`Manifest`) records what it was trained on
(sample ids, a digest of their text, the base model and its weights' digest), how it
was evaluated, its status, and the sha256 of each weights file. ``verify_adapter_files``
holds a directory to that record before anything reads its weights:

* adapters load only from safetensors: a directory holding a pickled
  ``adapter_model.bin`` (or ``.pt``, ``.pkl``, …) is refused, since unpickling can run code;
* a weights file whose sha256 differs from the manifest's, or that the manifest does not
  list, is refused (``AdapterIntegrityError``), also for the user's ``latest``: serving an
  older version instead would hide the tampering (``edgetune adapters rollback`` withdraws it);
* a manifest written before digests were recorded has none to check against: its version
  still loads, with a warning.

>>> Manifest.from_dict({"user_id": "u", "wrong": 1})
Traceback (most recent call last):
ValueError: manifest has unknown fields ['wrong']; written by a newer edgetune?
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from operators.files import atomic_write

__all__ = ["AdapterIntegrityError", "Evaluation", "MANIFEST", "Manifest", "Status", "WEIGHTS", "read_manifest",
           "training_data_digest", "verify_adapter_files", "weights_sha256", "write_manifest"]

log = logging.getLogger("models.adapters")  # the name adapter messages have always had (log filters)

Status = Literal["candidate", "promoted", "rejected", "rolled_back"]

MANIFEST = "manifest.json"
WEIGHTS = "adapter_model.safetensors"  # what peft's save_pretrained(safe_serialization=True) writes
# Pickle-based weight files: loading one can run arbitrary code, so they are never loaded.
_PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


@dataclass
class Evaluation:
    """Losses measured when the version was trained (nats per answer token).

    Attributes:
        probe_loss_before: on the user's held-out probe, with the version that was
            ``latest`` at training time (the base model if none).
        probe_loss_after: on the same probe, with this version.
        general_loss_base: on the fixed general probe set, base model.
        general_loss: on the general probe set, with this version; the rise over
            ``general_loss_base`` is how much base capability the adapter costs.
    """

    probe_loss_before: float | None = None
    probe_loss_after: float | None = None
    general_loss_base: float | None = None
    general_loss: float | None = None


@dataclass
class Manifest:
    """Everything needed to trust, reproduce and audit one adapter version.

    ``version``, ``created_at``, ``status`` and ``weights_sha256`` are set by
    ``AdapterStore.save``; the caller fills the rest. ``weights_sha256`` is empty in
    manifests written before it existed.
    """

    user_id: str
    base_model: str
    base_weights_digest: str
    data_digest: str
    sample_ids: list[str]
    n_real: int
    n_synthetic: int
    seed: int
    train_config: dict
    train_report: dict
    evaluation: Evaluation = field(default_factory=Evaluation)
    probe_ids: list[str] = field(default_factory=list)  # the user's gate probe: annotated, never trained on
    window: int | None = None  # the user's training window this version was trained for (None: not from a stream)
    weights_sha256: dict[str, str] = field(default_factory=dict)  # weights file name -> sha256 hex; set by save
    version: int = 0
    created_at: str = ""
    status: Status = "candidate"
    status_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"manifest has unknown fields {sorted(unknown)}; written by a newer edgetune?")
        data = dict(data)
        data["evaluation"] = Evaluation(**data.get("evaluation", {}))
        return cls(**data)


class AdapterIntegrityError(ValueError):
    """An adapter directory holds pickled weights, no safetensors, or weights its manifest does not vouch for."""


def weights_sha256(directory: Path) -> dict[str, str]:
    """``{file name: sha256 hex}`` of the safetensors weight files in ``directory``.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "adapter_model.safetensors").write_bytes(b"weights")
    >>> weights_sha256(d) == {"adapter_model.safetensors": hashlib.sha256(b"weights").hexdigest()}
    True
    """
    out = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[path.name] = digest.hexdigest()
    return out


def verify_adapter_files(path: Path) -> Manifest | None:
    """Check an adapter directory before anything reads its weights; returns its manifest (None without one).

    Refused (``AdapterIntegrityError``): any pickle-format weights file (``adapter_model.bin``
    and the like), no ``adapter_model.safetensors``, or a weights file whose sha256 differs
    from the manifest's (or that the manifest does not list). A manifest without digests
    (written before they were recorded) or a directory without a manifest loads with a
    warning: there is nothing to check against.
    """
    path = Path(path)
    pickled = sorted({p.name for pattern in _PICKLED for p in path.glob(pattern)})
    if pickled:
        raise AdapterIntegrityError(
            f"adapter {str(path)!r} holds pickle-format weights {pickled}; edgetune loads adapters only from "
            f"safetensors ({WEIGHTS}), since unpickling can run code: delete the file(s), or retrain the version"
        )
    if not (path / WEIGHTS).is_file():
        raise AdapterIntegrityError(f"adapter {str(path)!r} has no {WEIGHTS}; adapters load only from safetensors")
    manifest = read_manifest(path / MANIFEST) if (path / MANIFEST).is_file() else None
    if manifest is None or not manifest.weights_sha256:
        log.warning("adapter %s has no recorded weights digest (%s); loading it unverified", path,
                    "no manifest" if manifest is None else "manifest written before digests were recorded")
        return manifest
    actual = weights_sha256(path)
    if WEIGHTS not in manifest.weights_sha256:
        raise AdapterIntegrityError(f"adapter {str(path)!r}: its manifest records no digest of {WEIGHTS}")
    for name, digest in actual.items():
        expected = manifest.weights_sha256.get(name)
        if expected != digest:
            what = "is not listed in its manifest" if expected is None else (
                f"has sha256 {digest[:16]}…, its manifest records {expected[:16]}…")
            raise AdapterIntegrityError(
                f"adapter {str(path)!r}: {name} {what}; the weights were changed after training, so this version "
                "is not used (`edgetune adapters rollback --user U` withdraws it if it is the latest)"
            )
    return manifest


def training_data_digest(samples: Iterable[tuple[str, str]]) -> str:
    """sha256 (hex) over ``(sample_id, text)`` pairs sorted by id; order-independent.

    Each field is length-prefixed, so no two different sets give the same byte stream.

    >>> training_data_digest([("b", "2"), ("a", "1")]) == training_data_digest([("a", "1"), ("b", "2")])
    True
    >>> training_data_digest([("a", "1")]) == training_data_digest([("a", "2")])
    False
    """
    digest = hashlib.sha256()
    for sample_id, text in sorted(samples):
        for part in (sample_id, text):
            raw = part.encode()
            digest.update(len(raw).to_bytes(8, "big"))
            digest.update(raw)
    return digest.hexdigest()


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; ``ValueError`` naming the file if it is not one."""
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid manifest: {err}") from err


def write_manifest(path: Path, data: dict) -> None:
    """Write a manifest (``Manifest.to_dict()``) atomically: sorted keys, indented, one trailing newline."""
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
