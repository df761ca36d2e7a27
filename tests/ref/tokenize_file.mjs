// tokenize_file.mjs — token ids of a prompt list from the reference tokenizer (@lenml/tokenizers, the JS
// port of HF tokenizers) for ANY tokenizer.json (e.g. the nano tokenizer, models/nano/tokenizer/).
//
//   node tests/ref/tokenize_file.mjs TOKENIZER_DIR PROMPTS.json OUT.json [--template]
//
// TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json; PROMPTS.json is a JSON array of strings.
// OUT.json gets one id list per prompt, one per line, in the format of `zlora debug tokenize` (so the two
// outputs compare as text): plain encoding (add_special_tokens: false), or with --template the Z-Image
// template "<|im_start|>user\n" + p + "<|im_end|>\n<|im_start|>assistant\n" encoded the same way, cut at
// 512 ids.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";

const args = process.argv.slice(2).filter((a) => a !== "--template");
const templ = process.argv.includes("--template");
if (args.length !== 3) {
  console.error("usage: node tests/ref/tokenize_file.mjs TOKENIZER_DIR PROMPTS.json OUT.json [--template]");
  process.exit(2);
}
const [dir, promptsPath, outPath] = args;
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
});
const enc = (s) => Array.from(tok.encode(s, { add_special_tokens: false }));
const PRE = "<|im_start|>user\n", POST = "<|im_end|>\n<|im_start|>assistant\n", MAX = 512;
const prompts = JSON.parse(readFileSync(promptsPath, "utf8"));
const rows = prompts.map((p) => (templ ? enc(PRE + p + POST).slice(0, MAX) : enc(p)));
writeFileSync(outPath, "[\n" + rows.map((r) => JSON.stringify(r)).join(",\n") + "\n]\n");
console.log(`${prompts.length} prompts -> ${outPath}`);
