"""A byte-level CLIP BPE vocabulary generated locally, so the tiny profile's tokenizers need no hub.

The vocabulary has the same shape of entries as CLIP's (the 256 byte symbols, each also with the
``</w>`` word-end suffix, merges, then the two special tokens), only far fewer merges.

Example::

    write_clip_tokenizer_files(Path("tok"))   # tok/vocab.json, tok/merges.txt
"""

from __future__ import annotations

import json
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"
# Words common in our prompts; BPE merges learned from them make each a single token, so a full prompt
# fits CLIP's 77 tokens as it does with the released vocabulary; anything else falls back to bytes.
WORDS = (
    "a an anatomy and arms asian athletic average bad blurry body broad build camera cartoon casual "
    "chair close cropped curvy cut defined deformed disfigured down east entire extra facing fair "
    "feet figure fingers fit focus frame full half hands head headshot healthy hips in large lean "
    "legs light limbs lowres lying man mid minimal missing muscles muscular natural of off on only "
    "out person photorealistic physique plus portrait proportions relaxed sharp shoes short shot "
    "shoulders sitting size skin slender slim standing stature stride tall text the thin to toe "
    "toned towards up upper upright very visible walking watermark wearing weight woman jeans shirt "
    "dress hair black brown blond olive dark medium tone year old with clothes studio background "
    "plain"
).split()


def _trained_merges(words: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """Greedy BPE learned from ``words``: merge the most frequent adjacent pair (ties broken by
    the pair itself, so the result is deterministic) until every word is one symbol."""
    from collections import Counter

    spelled = [list(w[:-1]) + [w[-1] + "</w>"] for w in dict.fromkeys(words)]
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for word in spelled for pair in zip(word, word[1:]))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        spelled = [_merge(word, best) for word in spelled]


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


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
    pairs = _trained_merges(WORDS)
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in pairs]
    tokens += [START, END]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    merges = ["#version: 0.2"] + [f"{a} {b}" for a, b in pairs]
    return vocab, merges


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab()
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path
