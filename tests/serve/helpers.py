"""Shared by the serve tests: real peft adapters in a real store, and a real server on a free loopback port."""

from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from models.adapters import AdapterStore, Manifest, training_data_digest


def make_adapter(model: Any, seed: int, scale: float = 0.08) -> Any:
    """A LoRA adapter for (a copy of) ``model``, B drawn at random as if trained: it changes the answers."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return peft_model


def save_promoted(store: AdapterStore, user: str, peft_model: Any, base: str = "test-base") -> int:
    samples = [(f"{user}-e1", "text")]
    manifest = Manifest(user_id=user, base_model=base, base_weights_digest="0" * 64,
                        data_digest=training_data_digest(samples), sample_ids=["e1"], n_real=1, n_synthetic=0,
                        seed=0, train_config={}, train_report={})
    version = store.save(user, peft_model, manifest)
    store.promote(user, version)
    return version


@contextmanager
def running(server: Any, settings: Any) -> Iterator[str]:
    """``flows.serve.build_app(server)`` under uvicorn in a thread; yields the base URL (``.../v1``)."""
    from flows.serve import bound_port, build_app, uvicorn_server, wait_started

    http = uvicorn_server(build_app(server), settings)
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    try:
        wait_started(http, thread)
        yield f"http://127.0.0.1:{bound_port(http)}/v1"
    finally:
        http.should_exit = True
        thread.join(timeout=15)
        server.close()


def spool_lines(folder: Path, name: str) -> list[dict]:
    import json

    path = folder / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
