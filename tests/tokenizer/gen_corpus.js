#!/usr/bin/env node
// Writes the tokenizer parity corpus: deterministic (seeded xorshift), at least MIN_BYTES of
// UTF-8 in documents of a few KiB, mixing prose with contractions in every case, code in several
// languages, many scripts and emoji, digit runs, whitespace runs, CRLF and mixed newline runs,
// and very long words.
//
// Usage: gen_corpus.js OUT.bin [SEED] [MIN_BYTES]
// Format: for each document, its byte length as a 32-bit little-endian integer, then the bytes.
//
// Deliberately absent: the text of special tokens (the reference splits "<|eot_id|>" out of
// text, loupe by design does not), and U+0085 / U+FEFF, the two characters where JavaScript's
// \s differs from Unicode White_Space (which loupe, Rust's regex and Oniguruma use).
'use strict';
const fs = require('fs');

const out = process.argv[2];
let seed = BigInt(process.argv[3] || '20240601');
const minBytes = Number(process.argv[4] || 1200000);
if (!out) {
  console.error('usage: gen_corpus.js OUT.bin [SEED] [MIN_BYTES]');
  process.exit(2);
}

// ---- deterministic randomness ----
const M64 = (1n << 64n) - 1n;
let state = seed === 0n ? 0x9e3779b97f4a7c15n : seed;
function next() {
  state ^= state >> 12n;
  state ^= (state << 25n) & M64;
  state ^= state >> 27n;
  return Number(((state * 0x2545f4914f6cdd1dn) & M64) >> 11n) / 2 ** 53;
}
const rnd = (n) => Math.floor(next() * n);
const pick = (a) => a[rnd(a.length)];
const chance = (p) => next() < p;
const rep = (s, n) => s.repeat(n);

// ---- material ----
const words = ('the of and to in is was that for it with as his on be at by this had not are but ' +
  'from or have an they which one you were her all she there would their we him been has when ' +
  'who will more no if out so said what up its about into than them can only other new some ' +
  'could time these two may then do first any my now such like our over man me even most made ' +
  'after also did many before must through back years where much your way well down should ' +
  'because each just those people how too little state good very make world still own see men ' +
  'work long get here between both life being under never day same another know while last ' +
  'might us great old year off come since against go came right used take three retrieval ' +
  'attention tokenizer sequence gradient transformer quantization kernel throughput latency ' +
  'bandwidth document context session index graph pivot neighbour query softmax logits ' +
  'anthropomorphization internationalization counterrevolutionaries pneumonoultramicroscopic ' +
  'résumé naïve café coöperate façade jalapeño São Paulo Zürich Ångström Łódź Dvořák').split(' ');
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Re",
  "'rE", "'VE", "'Ve", "'M", "'LL", "'Ll", "'lL", "'D", "’s", "’re", "'x", "'"];
const contractionWords = ["I'M", "I'm", "i'M", "You'Re", "YOU'RE", "you're", "we'VE", "They'll",
  "THEY'LL", "she'D", "He'S", "IT'S", "don't", "DON'T", "Don'T", "can't", "won't", "WON'T",
  "y'all", "o'clock", "rock'n'roll", "'tis", "''", "'''", "' s", "l'homme", "dell'arte",
  "we’re", "it‘s"];
const scripts = [
  '中文的分词器需要处理没有空格的长句子，这是一个测试。',
  '大規模言語モデルのトークナイザーは、ひらがなとカタカナと漢字を混ぜて処理します。',
  '한국어 문장은 띄어쓰기가 있지만 조사가 붙습니다. 토크나이저 테스트입니다!',
  'النص العربي يكتب من اليمين إلى اليسار، وفيه أرقام ١٢٣٤٥ أيضاً.',
  'עברית נכתבת מימין לשמאל, עם ניקוד לפעמים: שָׁלוֹם.',
  'Русский текст с заглавными БУКВАМИ и ёлками, а также цифрами 2024.',
  'Ελληνικά: Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.',
  'हिन्दी में लिखा गया वाक्य, अंक ०१२३४५६७८९ के साथ।',
  'ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ทำให้การตัดคำยากขึ้น',
  'বাংলা ভাষায় লেখা একটি বাক্য।', 'தமிழ் எழுத்துக்கள் சோதனை.', 'ქართული ენა და ანბანი.',
  'Հայերեն այբուբեն։', 'Tiếng Việt có nhiều dấu: Trường Đại học Bách khoa Hà Nội.',
  'Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　１２３　！？', 'Ⅻ Ⅳ ½ ¾ ² ³ ₁₂ ① ② ⑩ 〇 零',
  'e\u0301 a\u0308 n\u0303 o\u0302\u0323 (combining marks) Å vs A\u030A',
  '∀x∈ℝ: x² ≥ 0 ⇒ ∑ᵢ xᵢ² ≤ ∞; ∫₀¹ f(x) dx ≈ π/4 ± ε',
  '┌──┬──┐\n│ab│cd│\n└──┴──┘', '« guillemets » „Anführungszeichen“ “quotes” ‘single’ — – … •',
  'Türkçe: İstanbul’da ılık bir gün; ÇĞÖŞÜ çğöşü.', 'Polski: Zażółć gęślą jaźń.',
  'Ελληνικά ΣΊΣΥΦΟΣ σίσυφος', 'ﬁ ﬂ ﬃ ligatures, ß ẞ, Æ æ Œ œ',
];
const emoji = ['😀', '🎉', '👍🏽', '👩‍💻', '👨‍👩‍👧‍👦', '🇫🇷', '🇯🇵', '❤️', '🔥', '✨', '🤖', '🧠',
  '🏳️‍🌈', '🙇‍♀️', '☕', '⚠️', '✅', '🚀', '💯', '🥲', '🫠', '🐍', '🦀', '📄', '1️⃣', '#️⃣'];
const punct = ['.', ',', ';', ':', '!', '?', '...', '?!', '—', '-', '(', ')', '[', ']', '{', '}',
  '"', '«', '»', '/', '\\', '|', '@', '#', '$', '%', '^', '&', '*', '+', '=', '~', '`', '<', '>',
  '_', '<<', '>>=', '->', '=>', '::', '&&', '||', '!=', '==='];
const spaces = [' ', '  ', '   ', '\t', '\t\t', ' \t', '\u00A0', '\u3000', '\u2009', '\u200A',
  '\u2028', '\u202F', '\u205F', '\u1680', '\u2003'];
const newlines = ['\n', '\n\n', '\r\n', '\r\n\r\n', '\r', '\n\n\n\n', ' \n', '  \n\n ', '\t\n',
  '\n \n', '\r\n\n', '\n\r\n', ' \r\n', '\n\t\n  \n', '\u2029'];

function word() {
  let w = pick(words);
  const r = next();
  if (r < 0.08) w = w.toUpperCase();
  else if (r < 0.2) w = w[0].toUpperCase() + w.slice(1);
  else if (r < 0.22) w = [...w].map((c) => (chance(0.5) ? c.toUpperCase() : c)).join('');
  if (chance(0.06)) w += pick(contractions);
  return w;
}

function number() {
  const r = next();
  if (r < 0.3) return String(rnd(10 ** (1 + rnd(6))));
  if (r < 0.45) { let s = ''; const n = 1 + rnd(40); for (let i = 0; i < n; i++) s += rnd(10); return s; }
  if (r < 0.55) return (next() * 1000).toFixed(1 + rnd(6));
  if (r < 0.62) return `${rnd(1e3)},${String(rnd(1e3)).padStart(3, '0')},${String(rnd(1e3)).padStart(3, '0')}`;
  if (r < 0.7) return `+1 (${100 + rnd(900)}) ${100 + rnd(900)}-${1000 + rnd(9000)}`;
  if (r < 0.78) return `2024-${String(1 + rnd(12)).padStart(2, '0')}-${String(1 + rnd(28)).padStart(2, '0')}T${rnd(24)}:${rnd(60)}:${rnd(60)}Z`;
  if (r < 0.86) return `v${rnd(10)}.${rnd(20)}.${rnd(100)}-rc${rnd(5)}`;
  if (r < 0.92) return `0x${rnd(2 ** 31).toString(16)}${rnd(2 ** 20).toString(16).toUpperCase()}`;
  return `abc${rnd(1e5)}def${rnd(100)}ghi`;
}

function sentence() {
  const n = 4 + rnd(18);
  let s = '';
  for (let i = 0; i < n; i++) {
    const r = next();
    let piece;
    if (r < 0.72) piece = word();
    else if (r < 0.8) piece = number();
    else if (r < 0.86) piece = pick(contractionWords);
    else if (r < 0.9) piece = pick(emoji) + (chance(0.5) ? pick(emoji) : '');
    else if (r < 0.94) piece = pick(punct) + word();
    else piece = word() + pick(punct);
    s += (i ? (chance(0.05) ? pick(spaces) : ' ') : '') + piece;
  }
  return s + pick(['.', '.', '.', '!', '?', '...', ':', ';', '."', ".'", '?!', '']);
}

function prose() {
  let s = '';
  const paras = 1 + rnd(4);
  for (let p = 0; p < paras; p++) {
    const n = 2 + rnd(6);
    for (let i = 0; i < n; i++) s += (i ? (chance(0.1) ? '  ' : ' ') : '') + sentence();
    s += pick(newlines);
  }
  return s;
}

const snippets = {
  c: (id) => `#include <stdio.h>\n\nstatic int ${id}(const char *s, size_t n)\n{\n\tint acc = 0;\n\tfor (size_t i = 0; i < n; i++) {\n\t\tif (s[i] == '\\n' || s[i] == '\\t')\n\t\t\tacc += 0x${rnd(4096).toString(16)};\n\t\telse\n\t\t\tacc ^= s[i] << ${rnd(8)};\n\t}\n\treturn acc; /* ${sentence()} */\n}\n`,
  py: (id) => `def ${id}(xs: list[int], k: int = ${rnd(100)}) -> dict:\n    """${sentence()}"""\n    out = {}\n    for i, x in enumerate(xs):\n        if x % k == 0 and i != ${rnd(9)}:\n            out[f"key_{i:03d}"] = x ** 2  # it's fine\n    return out\n\n\nif __name__ == "__main__":\n    print(${id}([${rnd(99)}, ${rnd(99)}, ${rnd(99)}]))\n`,
  js: (id) => `export async function ${id}(url, { retries = ${rnd(5)} } = {}) {\n  const res = await fetch(\`\${url}?q=\${encodeURIComponent("${word()}")}\`);\n  if (!res.ok) throw new Error(\`HTTP \${res.status}\`);\n  return (await res.json()).items?.map((x) => x.id) ?? [];\n}\n`,
  rs: (id) => `impl<'a> Iterator for ${id[0].toUpperCase() + id.slice(1)}<'a> {\n    type Item = &'a str;\n    fn next(&mut self) -> Option<Self::Item> {\n        let s = self.rest.trim_start_matches(|c: char| c.is_whitespace());\n        if s.is_empty() { return None; }\n        let end = s.find(char::is_whitespace).unwrap_or(s.len());\n        self.rest = &s[end..];\n        Some(&s[..end])\n    }\n}\n`,
  sql: (id) => `SELECT u.id, COUNT(*) AS n_${id}\nFROM users u\nLEFT JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2023-01-0${1 + rnd(9)}' AND o.total > ${rnd(1000)}.${rnd(100)}\nGROUP BY u.id HAVING COUNT(*) > ${rnd(10)}\nORDER BY n_${id} DESC LIMIT ${rnd(100)};\n`,
  html: (id) => `<!DOCTYPE html>\n<html lang="en">\n  <body class="${id}">\n    <p id="p${rnd(99)}">${sentence()}</p>\n    <a href="https://example.com/${id}?a=1&amp;b=2">link</a>&nbsp;&lt;tag&gt;\n  </body>\n</html>\n`,
  json: (id) => JSON.stringify({ name: id, n: rnd(1e6), ok: chance(0.5), tags: [word(), word()], nested: { pi: 3.14159, s: sentence() } }, null, chance(0.5) ? 2 : '\t') + '\n',
  sh: (id) => `#!/usr/bin/env bash\nset -euo pipefail\nfor f in "$@"; do\n  [ -f "$f" ] || { echo "missing: $f" >&2; exit 1; }\n  ${id}=$(wc -l < "$f")\n  printf '%s\\t%d\\n' "$f" "$${id}"\ndone | sort -k2 -n | tail -n ${rnd(20)}\n`,
  go: (id) => `package main\n\nimport "fmt"\n\nfunc ${id}(m map[string]int) (int, error) {\n\tsum := 0\n\tfor k, v := range m {\n\t\tif len(k) > ${rnd(10)} {\n\t\t\tsum += v\n\t\t}\n\t}\n\treturn sum, fmt.Errorf("%d items", len(m))\n}\n`,
};
const codeKinds = Object.keys(snippets);

function code() {
  const id = pick(['parse', 'tokenize', 'run_all', 'fooBar', 'x1', 'µs', 'naïve_sum', '__init__', 'getHTTPResponse']);
  let s = snippets[pick(codeKinds)](id);
  if (chance(0.3)) s = s.replace(/\n/g, '\r\n');            // Windows line endings
  if (chance(0.2)) s = s.replace(/^ {4}/gm, '\t');          // tabs for indentation
  if (chance(0.1)) s = s.replace(/\n/g, ' \n');             // trailing spaces
  return s;
}

function longWord() {
  const r = next();
  const n = 200 + rnd(3000);
  if (r < 0.25) { let s = ''; while (s.length < n) s += pick(words).replace(/ /g, ''); return s; }
  if (r < 0.4) return rep(pick(['a', 'é', 'я', '字', 'ab', 'ß']), n);
  if (r < 0.55) { let s = ''; for (let i = 0; i < n; i++) s += rnd(10); return s; }
  if (r < 0.65) return rep(pick(['=', '-', '*', '#', '.', '!?', '<>', '…']), n);
  if (r < 0.75) return rep(pick([' ', '\t', '  \t']), n) + pick(['', 'x', '\n']);
  if (r < 0.85) return rep(pick(['\n', '\r\n', ' \n', '\n\n ']), 20 + rnd(200)) + 'y';
  if (r < 0.92) return rep(pick(emoji), 50 + rnd(200));
  return Buffer.from(Array.from({ length: 300 }, () => rnd(256))).toString('base64');
}

function randomScriptText() {
  // Code points drawn from long-established blocks only (no Unicode-version differences).
  const ranges = [[0x41, 0x7a], [0xc0, 0x24f], [0x370, 0x3ff], [0x400, 0x4ff], [0x5d0, 0x5ea],
    [0x627, 0x64a], [0x905, 0x939], [0xe01, 0xe30], [0x3041, 0x3096], [0x30a1, 0x30fa],
    [0x4e00, 0x9fa5], [0xac00, 0xd7a3], [0x2200, 0x22ff], [0x2500, 0x257f], [0x21, 0x2f],
    [0x660, 0x669], [0xff10, 0xff19], [0x2160, 0x216f], [0x1f600, 0x1f64f]];
  let s = '';
  const n = 20 + rnd(200);
  for (let i = 0; i < n; i++) {
    const [a, b] = pick(ranges);
    s += String.fromCodePoint(a + rnd(b - a + 1));
    if (chance(0.15)) s += pick(spaces.concat(['\n', ' ', ' ']));
  }
  return s;
}

function doc() {
  let s = '';
  const target = 2000 + rnd(6000);
  while (Buffer.byteLength(s) < target) {
    const r = next();
    if (r < 0.4) s += prose();
    else if (r < 0.6) s += code();
    else if (r < 0.75) s += pick(scripts) + pick([' ', '\n', '', '  ']) + (chance(0.5) ? pick(scripts) : '');
    else if (r < 0.82) s += randomScriptText();
    else if (r < 0.87) s += longWord();
    else if (r < 0.93) s += pick(newlines) + pick(spaces) + pick(newlines);
    else s += [number(), number(), number()].join(pick([' ', ', ', '\t', '\n', '']));
    s += pick(['', ' ', '\n', '\n\n', '\r\n', '  ', '\t']);
  }
  if (chance(0.3)) s = pick(spaces) + s;                  // leading whitespace
  if (chance(0.3)) s += pick(newlines) + pick(spaces);      // trailing whitespace
  return s;
}

const parts = [];
let total = 0;
while (total < minBytes) {
  const b = Buffer.from(doc(), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length, 0);
  parts.push(len, b);
  total += b.length;
}
fs.writeFileSync(out, Buffer.concat(parts));
console.error(`gen_corpus: ${parts.length / 2} documents, ${total} bytes`);
