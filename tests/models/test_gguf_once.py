"""The first-run conversion parses the GGUF file once, not once per transformers call."""

from __future__ import annotations

import gguf

from models.lm import _gguf_parsed_once, smollm2_gguf_path


def test_one_reader_per_file_inside_and_the_original_class_restored_after():
    path = smollm2_gguf_path()
    original = gguf.GGUFReader
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        again = gguf.GGUFReader(str(path))
        assert first is again and isinstance(first, original)
        assert "tokenizer.ggml.tokens" in first.fields
    assert gguf.GGUFReader is original
    assert original(path) is not first
