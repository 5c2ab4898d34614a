"""The trainer sink built for a flow works on its own copies of the model and the tokenizer."""

from __future__ import annotations

from pathlib import Path

from flows.selection import build_components
from flows.trainer import trainer_for
from operators.config import load_settings
from tests.models.test_tokens import race


def test_the_trainer_has_its_own_tokenizer_and_model_and_encodes_right_while_the_stream_embeds(tmp_path: Path):
    settings = load_settings(**{"model.lm": "tiny-random", "metrics.port": 0, "output.dir": tmp_path,
                                "train.enabled": True, "embed.center": False})
    components = build_components(settings)
    sink = trainer_for(settings, components)
    try:
        trainer = sink.runner
        assert trainer.tokenizer is not components.tokenizer
        assert trainer.tokenizer.backend_tokenizer is not components.tokenizer.backend_tokenizer
        assert trainer.model is not components.model
        # The stream's embedder on one thread, the trainer's encodes on another, as in a live run.
        assert race(components.tokenizer, trainer.tokenizer, components.model) == {"embed": [], "train": [], "errors": []}
    finally:
        sink.service.close()
