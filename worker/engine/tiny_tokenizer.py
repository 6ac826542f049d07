"""A byte-level CLIP BPE vocabulary generated locally, so the tiny profile's tokenizers need no hub.

The vocabulary has the same shape of entries as CLIP's (the 256 byte symbols, each also with the
``</w>`` word-end suffix, a few merges, then the two special tokens), only far fewer merges.

Example::

    write_clip_tokenizer_files(Path("tok"))   # tok/vocab.json, tok/merges.txt
"""

from __future__ import annotations

import json
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"
# A handful of frequent English pairs: enough that merging is exercised, small enough to stay tiny.
_MERGES = [("t", "h"), ("i", "n"), ("a", "n"), ("th", "e</w>"), ("o", "n</w>"), ("e", "r")]


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_vocab() -> tuple[dict[str, int], list[str]]:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in _MERGES]
    tokens += [START, END]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    merges = ["#version: 0.2"] + [f"{a} {b}" for a, b in _MERGES]
    return vocab, merges


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab()
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path
