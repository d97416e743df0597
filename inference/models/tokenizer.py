"""A CLIP byte-level BPE tokenizer written locally, for models built in code (no download needed).

It follows the file format of openai/clip-vit-large-patch14 (`vocab.json`, `merges.txt`), so it loads
with `CLIPTokenizer.from_pretrained` like any real one. The vocabulary holds every byte symbol (with and
without the end-of-word marker) plus whole-word merges for a fixed word list, so common prompt words are
single tokens and any other text still tokenizes (into smaller pieces).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that prompts and captions in this project use often; everything else falls back to sub-words.
WORDS = """
a an the of on in with and at to for by from is are photo picture image drawing painting style art
1girl 1boy girl boy man woman person people character solo portrait face hair eyes smile standing
sitting looking viewer background simple white black red green blue yellow orange purple pink brown
gray grey cyan magenta gold silver dark light bright small large big tiny medium circle square
triangle star heart ring cross diamond shape shapes striped dotted pattern texture outdoors indoors
sky day night sun tree flower cat dog car house water best quality masterpiece lowres bad worst
blurry sls sks ohwx chk toy token class reg left right top bottom center middle corner two three
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """What BPE makes of `pieces` with the merges so far: always the lowest-ranked adjacent pair first."""
    while len(pieces) > 1:
        pairs = [
            (ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:], strict=False))
        ]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def _vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    symbols = list(_bytes_to_unicode().values())
    vocab: list[str] = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    seen = set(vocab)
    byte_map = _bytes_to_unicode()
    for word in dict.fromkeys(words):
        pieces = [byte_map[b] for b in word.encode("utf-8")]
        pieces[-1] += "</w>"
        # Earlier words' merges fire first (lower rank), so finish from where they leave this word:
        # the new merges rank after all others and join what is left, left to right, into one token.
        pieces = _apply_merges(pieces, ranks)
        current = pieces[0]
        for nxt in pieces[1:]:
            merged = current + nxt
            if (current, nxt) not in ranks:
                ranks[(current, nxt)] = len(merges)
                merges.append((current, nxt))
            if merged not in seen:
                vocab.append(merged)
                seen.add(merged)
            current = merged
    vocab += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer_files(folder: str | Path, words: list[str] | None = None) -> Path:
    """Write `vocab.json`, `merges.txt` and `tokenizer_config.json` (max length 77) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges(WORDS if words is None else words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def build_tokenizer(folder: str | Path, words: list[str] | None = None) -> CLIPTokenizer:
    """Write the tokenizer files into `folder` and load them back through the standard loader."""
    return CLIPTokenizer.from_pretrained(str(write_tokenizer_files(folder, words)))
