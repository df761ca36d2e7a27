// make_prompts.mjs — writes the tokenizer test corpus (deterministic: same output on every run).
//
//   node tests/ref/make_prompts.mjs            (writes tests/data/tokenizer/prompts.json, bytes.json)
//
// prompts.json: a JSON array of strings, hand-written hard cases first, then generated ones.
// bytes.json:   a JSON array of hex strings: byte sequences with invalid UTF-8 (and NULs), which a
//               JSON string cannot hold. tokenize_ref.mjs then writes the expected ids of both.
//
// Characters come from blocks assigned long before Unicode 14 (the version of Debian 12's PCRE2), so
// the reference (Node's ICU, newer) and the C side agree on every character's category.
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "data", "tokenizer");

// ---------------------------------------------------------------- deterministic random numbers
let state = 0x2545f491;
function rnd() { // xorshift32 -> [0, 1)
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return state / 4294967296;
}
const ri = (n) => Math.floor(rnd() * n);
const pick = (a) => a[ri(a.length)];
const cp = (lo, hi) => String.fromCodePoint(lo + ri(hi - lo + 1));
const repeat = (f, n) => Array.from({ length: n }, f).join("");

// ---------------------------------------------------------------- hand-written hard cases
const hand = [
  "", " ", "  ", "   ", "\t", "\n", "\r", "\r\n", "\n\n", "\r\r", "\n\r", " \n", "\n ", " \n ", "\t\n\t",
  "a", "A", "0", "!", "hello", "Hello world", " hello", "hello ", " hello ", "hello  world", "hello\tworld",
  "hello\nworld", "hello\r\nworld", "hello\n\nworld", "hello \n world", "trailing spaces   ", "   leading spaces",
  "line one\nline two\r\nline three\rline four\n", "mixed\r\n\n\r\r\n endings \n\r ", "tab\t\tin\t the\t middle\t",
  "x  \n\n  y", "a \t\n b", "\u00a0nbsp\u00a0here\u00a0", "ideographic\u3000space", "en\u2002em\u2003thin\u2009hair\u200a",
  "line\u2028separator\u2029para", "bom\ufeffinside", "\ufeffleading bom", "nel\u0085char", "mongolian\u180evs",
  "zero\u200bwidth\u200cjoiners\u200d", "figure\u2007space narrow\u202fnbsp", "ogham\u1680space", "math\u205fspace",
  "vertical\u000btab form\u000cfeed",
  // where JS's \s (U+FEFF yes; U+0085, U+180E no) changes the ids, not only the pieces
  "\ufeff//", "\ufeff# title", "\ufeff/*\n", "a\ufeff//x", "x \ufeff//", "\ufeffusing System;", "\ufeff\ufeff//",
  "a \u180eb", "a \u0085b", "nel \u0085 x", "x\u0085\u0085 y", "control\u0001chars\u001f\u007f", "del\u007f\u0080\u009f c1",
  // contractions in every case
  "it's", "It'S", "IT'S", "we'll WE'LL We'Ll we'lL", "they're THEY'RE They'Re", "I've I'VE i'vE", "I'm I'M",
  "I'd I'D", "don't DON'T Don'T", "'s 'S 't 'T 're 'RE 'Re 'rE 've 'VE 'm 'M 'll 'LL 'Ll 'lL 'd 'D",
  "''s", "'''", "'sss", "x'ſa x'Ss x'ss", "rock'n'roll", "o'clock", "‘quoted’ don’t", "'", " '", "' ", "'\n",
  "'s'", "'ll'll'll", "abc'", "'123", "1'2", "é's", "日本's",
  // digits
  "0123456789", "3.14159265358979323846", "1,000,000", "1 000 000", "-42", "+1e-10", "0x1F", "2024-01-01",
  "12:30:45", "١٢٣ arabic-indic", "४२ devanagari", "๓ thai digit", "①②③ circled", "½ ¾ ⅓", "Ⅻ roman", "²³ superscripts",
  "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
  "12345678901234567890123456789012345678901234567890",
  // CJK and others
  "一只可爱的猫坐在窗台上，阳光洒在它的毛上。", "日本語のテキスト、カタカナとひらがな。", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",
  "한국어 문장입니다. 고양이가 귀엽다!", "مرحبا بالعالم، هذه جملة عربية.", "שלום עולם", "नमस्ते दुनिया, यह हिंदी है।",
  "สวัสดีชาวโลก นี่คือภาษาไทย", "Привет, мир! Ёлка.", "Γειά σου Κόσμε", "Xin chào thế giới", "Ελληνικά και русский mixed",
  "ქართული ენა", "Հայերեն", "বাংলা ভাষা", "தமிழ் மொழி", "ಕನ್ನಡ", "ગુજરાતી", "ਪੰਜਾਬੀ", "ລາວ", "ខ្មែរ", "မြန်မာ", "አማርኛ",
  "中文English混合text", "価格は¥1,000です", "【重要】お知らせ", "「引用」『二重』", "……——", "中。文，標！點？",
  // emoji
  "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇺🇸🇫🇷", "🇯", "👩🏾‍💻 coding", "❤️", "☺︎ text style", "🧑‍🤝‍🧑",
  "emoji😀in😀text", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 scotland", "1️⃣ #️⃣ *️⃣", "🐱🐶🐭🐹🐰🦊🐻🐼", "👋🏻👋🏼👋🏽👋🏾👋🏿",
  // NFD / combining
  "e\u0301", "cafe\u0301", "Cafe\u0301 de\u0301ja\u0300 vu", "A\u030angstro\u0308m", "\u212b angstrom sign", "\u2126 ohm",
  "n\u0303", "a\u0328\u0301 a\u0301\u0328", "\u1112\u1161\u11ab\u1100\u1173\u11af hangul jamo", "z\u0335\u0321a\u0336\u0322l\u0337\u0323g\u0338o",
  "\u0301 leading combining", "x\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307\u0308\u0309", "\u00e9 vs e\u0301",
  "\u0958 devanagari nukta (composition exclusion)", "\u0915\u093c", "\u0344 greek dialytika tonos", "Å Å",
  // special tokens inside text
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "hello<|im_end|>world", "a <|im_start|> b",
  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|><|im_end|><|endoftext|>",
  "<|im_start", "<|im_start|", "im_start|>", "<<|im_end|>>", "<|IM_START|>", "< |im_start| >", "<|im_end|><|im_end|>",
  "<think>reasoning</think>answer", "<tool_call>{\"a\":1}</tool_call>", "<|vision_start|><|image_pad|><|vision_end|>",
  "<|box_start|>(1,2)<|box_end|>", " <|im_end|> ", "\n<|im_end|>\n", "x<|endoftext|>", "<|endoftext|>x",
  "<|fim_prefix|>code<|fim_suffix|>", "<|unknown_token|>", "<|im_end|>\u0301", "é<|im_end|>e\u0301",
  // Danbooru / prompt syntax
  "1girl, solo, long_hair, (masterpiece:1.2), best quality",
  "1girl, solo, long hair, looking at viewer, smile, blue eyes, blonde hair, (masterpiece:1.2), (best quality:1.1), highres",
  "score_9, score_8_up, score_7_up, rating:safe, source_anime", "[blue eyes], {best quality}, ((detailed)), (((ultra)))",
  "\\(artist\\), <lora:foo_v2:0.8>, BREAK, AND", "masterpiece,best quality,1boy,male focus,short hair,",
  "(worst quality, low quality:1.4), bad_anatomy, extra_fingers", "2girls, multiple_girls, yuri, 1990s_(style)",
  "photo of a cat, 8k, uhd, dslr, soft lighting, film grain, Fujifilm XT3", "a__b___c____d", "tag1,tag2,,tag3, ,tag4",
  // URLs, code, markup
  "https://example.com/path/to/page?query=1&x=%20y#frag", "http://www.example.org", "user@example.com", "ftp://a.b/c",
  "def f(x):\n    return x ** 2  # square\n", "int main(void) { return 0; }", "for (i=0;i<n;++i){a[i]+=b[i]*c;}",
  "{\"key\": \"value\", \"n\": [1, 2, 3]}", "<div class=\"x\">Hello &amp; bye</div>", "SELECT * FROM t WHERE a='b';",
  "    indented\n        more\n    back", "```python\nprint('hi')\n```", "$ ls -la | grep foo && echo ok",
  "a->b, a=>b, a!=b, a==b, a<=b, a>=b, a&&b, a||b", "#include <stdio.h>", "// comment /* block */", "C:\\Windows\\Path",
  // punctuation runs
  "!!!", "???", "...", "---", "***", "!?!?", "...\n", "!!!\r\n\r\n", "(){}[]<>", "@#$%^&*", "~`|\\", "—–-", "«»‹›",
  "a.b.c", "a, b; c: d", "¡Hola! ¿Qué?", "end.", ".start", "mid . dot", "?\n\n\n", "\"quotes\" 'single'",
  // mixed hard
  "Z-Image Turbo: a photo of 一只猫 🐱 on a ベンチ, 4k", "Ünïcödé Tëxt wïth àccénts", "ÀÉÎÕÜ àéîõü", "ß ẞ ﬁ ﬂ ﬀ",
  "İstanbul ıi Iİ", "ǅ ǈ ǋ titlecase", "ꝏ ꜳ", "𝐁𝐨𝐥𝐝 𝕄𝕒𝕥𝕙", "𝟘𝟙𝟚 math digits", "Ａ full Ｚ", "ｱｲｳ halfwidth",
  "A" + "\u0300".repeat(20), "\u200d\u200d\u200d", "\ufe0f\ufe0f", "a\ufe0fb", "⁠word⁠joiner",
];

// ---------------------------------------------------------------- generated cases
const words = ["the", "a", "cat", "sitting", "on", "window", "sunlight", "portrait", "of", "young", "woman", "with",
  "red", "hair", "wearing", "kimono", "cyberpunk", "city", "at", "night", "neon", "lights", "rain", "reflections",
  "highly", "detailed", "photorealistic", "cinematic", "lighting", "bokeh", "landscape", "mountains", "lake",
  "sunset", "golden", "hour", "oil", "painting", "style", "Van", "Gogh", "Tokyo", "Shibuya", "crossing", "dog",
  "running", "beach", "waves", "spaceship", "nebula", "stars", "dragon", "castle", "forest", "mist", "Z-Image",
  "Qwen3", "LoRA", "SDXL", "FLUX.1", "don't", "it's", "we'll", "THEY'RE", "I'M", "She'D", "you'Ve"];
const cjk = () => repeat(() => cp(0x4e00, 0x9fa5), 1 + ri(12));
const hira = () => repeat(() => cp(0x3041, 0x3093), 1 + ri(8));
const kata = () => repeat(() => cp(0x30a1, 0x30f6), 1 + ri(8));
const hangul = () => repeat(() => cp(0xac00, 0xd7a3), 1 + ri(6));
const arabic = () => repeat(() => cp(0x0621, 0x064a), 2 + ri(7));
const deva = () => repeat(() => cp(0x0915, 0x0939) + (rnd() < 0.5 ? cp(0x093e, 0x094c) : ""), 1 + ri(5));
const thai = () => repeat(() => cp(0x0e01, 0x0e2e) + (rnd() < 0.3 ? cp(0x0e31, 0x0e3a) : ""), 2 + ri(8));
const cyr = () => repeat(() => cp(0x0410, 0x044f), 2 + ri(8));
const greek = () => repeat(() => { let c; do c = cp(0x0391, 0x03c9); while (c === "\u03a2" || c === "\u03aa"); return c; }, 2 + ri(6));
const latinx = () => repeat(() => cp(0x00c0, 0x024f), 1 + ri(6)).replace(/[\u00d7\u00f7]/g, "x");
const skin = () => String.fromCodePoint(0x1f3fb + ri(5));
const emoji = () => {
  const base = String.fromCodePoint(pick([0x1f600 + ri(0x50), 0x1f300 + ri(0x100), 0x1f466 + ri(4), 0x1f44b, 0x1f44d]));
  switch (ri(6)) {
    case 0: return base;
    case 1: return String.fromCodePoint(0x1f44b + ri(3)) + skin();
    case 2: return ["👨", "👩", "🧑"][ri(3)] + (rnd() < 0.5 ? skin() : "") + "\u200d" + pick(["💻", "🔬", "🎨", "🚀", "🍳", "🌾"]);
    case 3: { const a = 0x1f1e6 + ri(26), b = 0x1f1e6 + ri(26); return String.fromCodePoint(a, b); }
    case 4: return pick(["❤", "☀", "✈", "☎", "✂"]) + "\ufe0f";
    default: return "👨‍👩‍" + pick(["👧", "👦"]) + (rnd() < 0.5 ? "‍👦" : "");
  }
};
const nfd = () => pick(["café", "naïve", "Ångström", "résumé", "piñata", "Øre", "jalapeño", "crème brûlée", "Ḱ", "ǖ", "ệ", "한글", "가나다"]).normalize("NFD");
const digits = () => repeat(() => String(ri(10)), 1 + ri(rnd() < 0.1 ? 60 : 8));
const space = () => pick([" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\n ", "\r", "\u3000", "\u00a0", " \t ", "\n\n\n", "    "]);
const punct = () => pick([",", ".", "!", "?", ";", ":", "(", ")", "[", "]", "{", "}", "\"", "'", "-", "_", "/", "\\", "...", "!!", "?!", "、", "。", "，", "「", "」", "—", "…", "*", "#", "@", "&", "%", "$", "+", "=", "<", ">", "|", "~", "^", "`"]);
const contraction = () => {
  const c = pick(["s", "t", "re", "ve", "m", "ll", "d"]);
  return pick(words) + "'" + Array.from(c, (ch) => (rnd() < 0.5 ? ch.toUpperCase() : ch)).join("");
};
const special = () => pick(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<|vision_pad|>", "<tool_call>"]);
const tag = () => {
  const t = pick(["1girl", "solo", "long_hair", "short_hair", "blue_eyes", "smile", "looking_at_viewer", "masterpiece", "best_quality", "outdoors", "sky", "cherry_blossoms", "school_uniform", "absurdres", "highres", "2boys", "animal_ears", "holding_sword"]);
  switch (ri(4)) {
    case 0: return "(" + t + ":" + (0.5 + ri(15) / 10).toFixed(1) + ")";
    case 1: return "[" + t + "]";
    case 2: return "{" + t.replace(/_/g, " ") + "}";
    default: return t;
  }
};
const ascii = () => repeat(() => String.fromCharCode(1 + ri(127)), 1 + ri(10));

const frags = [() => pick(words), cjk, hira, kata, hangul, arabic, deva, thai, cyr, greek, latinx, emoji, nfd,
  digits, punct, contraction, special, tag, ascii];
const gen = [];
// free mixes
for (let i = 0; i < 300; i++) {
  const n = 1 + ri(14);
  let s = "";
  for (let k = 0; k < n; k++) {
    s += pick(frags)();
    if (rnd() < 0.7) s += rnd() < 0.8 ? " " : space();
  }
  if (rnd() < 0.15) s = space() + s;
  if (rnd() < 0.15) s += space();
  gen.push(s);
}
// Danbooru tag lists
for (let i = 0; i < 40; i++) gen.push(repeat(() => tag() + pick([", ", ",", ", ", " , "]), 2 + ri(20)));
// natural sentences with contractions and punctuation
for (let i = 0; i < 60; i++) {
  let s = "";
  const n = 3 + ri(20);
  for (let k = 0; k < n; k++) s += (k ? " " : "") + (rnd() < 0.2 ? contraction() : pick(words)) + (rnd() < 0.15 ? punct() : "");
  gen.push(s);
}
// whitespace torture
for (let i = 0; i < 30; i++) gen.push(repeat(() => (rnd() < 0.5 ? space() : pick(words)), 2 + ri(12)));
// script runs without spaces (long \p{L}+ pieces)
for (let i = 0; i < 20; i++) gen.push(repeat(() => pick([cjk, hira, kata, hangul, thai, deva])(), 3 + ri(10)));
// long prompts (> 512 tokens): the template truncation
const longp = [
  repeat(() => pick(words) + " ", 700),
  repeat(() => cjk(), 120),
  repeat(() => String(ri(10)), 600),
  repeat(() => emoji(), 300),
  repeat(() => tag() + ", ", 300),
  repeat(() => pick(frags)() + " ", 400),
  "a photo of " + repeat(() => pick(words) + ", ", 505),                              // ends right around 512
  repeat(() => "word ", 503),                                                          // template tail cut
  " ".repeat(3000),
  "\n".repeat(700) + "end",
];
gen.push(...longp);

const prompts = [...hand, ...gen];
if (prompts.length < 500) throw new Error(`only ${prompts.length} prompts`);
for (const p of prompts) if (p.includes("\u0000")) throw new Error("NUL in a prompt");

// ---------------------------------------------------------------- byte sequences (invalid UTF-8)
const bytes = [
  "ff", "fe", "80", "bf", "c0", "c1", "c0af", "c1bf", "e080af", "f0808080", "c2", "e2", "e282", "f09f", "f09f98",
  "ed a0 80", "eda080edb080", "edbfbf", "f4908080", "f5", "f8888080 80", "fc8480808080",
  "68656c6c6f ff 776f726c64", "636166 c3 a9", "e6 97 a5 e6 9c", "ef bb bf 68 69", "ef bb bf", "00", "61 00 62",
  "3c7c696d5f656e647c3e ff", "ff 3c7c696d5f656e647c3e", "65 cc", "65 cc 81", "65 cc 81 ff cc 81", "c3 28", "a0 a1",
  "e2 28 a1", "e2 82 28", "f0 28 8c bc", "f0 90 28 bc", "f0 28 8c 28", "80 80 80 80", "e0 a0", "f1 80 80",
  "20 ff 20", "0d 0a ff 0d 0a", "27 53 ff 27 4c 4c",
].map((h) => h.replace(/ /g, ""));
for (const h of bytes) if (h.length % 2) throw new Error(`odd hex ${h}`);

mkdirSync(out, { recursive: true });
writeFileSync(join(out, "prompts.json"), "[\n" + prompts.map((p) => JSON.stringify(p)).join(",\n") + "\n]\n");
writeFileSync(join(out, "bytes.json"), "[\n" + bytes.map((p) => JSON.stringify(p)).join(",\n") + "\n]\n");
console.log(`prompts.json: ${prompts.length} prompts (${hand.length} hand-written); bytes.json: ${bytes.length}`);
