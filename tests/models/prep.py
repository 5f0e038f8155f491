"""Builds the tokenizer and the pre-tokenized corpus for loupe-tiny from text found on the machine
(Python's standard library and site-packages sources, C headers, /usr/share/doc).

  python3 tests/models/prep.py --out .cache/model-train [--seed 1234] [--max-mb 96]

Writes into --out:
  tokenizer.json  byte-level BPE (HF `tokenizers`), Llama-3 pre-tokenizer regex, ignore_merges,
                  Llama-3's special tokens at ids 0..15
  corpus.npz      tokens (uint16), doc_off, doc_split (0 train, 1 held out), doc_path, python
                  top-level def/class names with their token offsets, a word list
  prep.json       what was selected (counts, bytes, seconds)

Invariants: file selection depends only on the file set, their contents and --seed (walks are
sorted, choice is by a seeded hash of the display path, duplicates dropped by content hash), so the
same machine image gives the same corpus. A document's text is the file's text with CRLF turned to
LF, leading blank lines dropped and a final newline ensured. Held-out documents (hash mod 20 == 0)
are never used for training cases.
"""
import argparse
import collections
import hashlib
import json
import os
import re
import sys
import sysconfig
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402  (special token list, tokenizer wrapper)

EXTS = {".py", ".pyi", ".md", ".rst", ".txt", ".h", ".c", ".cc", ".cpp", ".hpp", ".cu", ".cuh",
        ".sh", ".toml", ".cfg", ".ini"}
MIN_BYTES, MAX_BYTES = 800, 160_000
DEF_RE = re.compile(r"^(?:async def|def|class) ([A-Za-z][A-Za-z0-9_]*)", re.M)
WORD_RE = re.compile(r"\b[a-z]{4,9}\b")


def roots():
    """(display prefix, directory) pairs, in a fixed order."""
    paths = sysconfig.get_paths()
    out = []
    ver = "python%d.%d" % sys.version_info[:2]
    for name, d in ((ver, paths["stdlib"]), ("site-packages", paths["purelib"]),
                    ("include", "/usr/include"), ("doc", "/usr/share/doc")):
        if d and os.path.isdir(d) and all(os.path.realpath(d) != os.path.realpath(o) for _, o in out):
            out.append((name, d))
    return out


def hkey(seed, s):
    return hashlib.sha1(("%d:%s" % (seed, s)).encode()).hexdigest()


def clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"\A(?:[ \t]*\n)+", "", text)
    if not text.endswith("\n"):
        text += "\n"
    return text


def acceptable(text):
    if "\x00" in text or len(text) < MIN_BYTES:
        return False
    lines = text.split("\n")
    if max(len(l) for l in lines) > 1000:
        return False
    if len(text) / max(1, len(lines)) > 160:
        return False
    letters = sum(c.isalpha() for c in text[:4000])
    return letters > 0.3 * min(len(text), 4000)


def select_files(seed, max_bytes, log):
    cands = []
    for prefix, d in roots():
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames.sort()
            for fn in sorted(filenames):
                if os.path.splitext(fn)[1] not in EXTS:
                    continue
                full = os.path.join(dirpath, fn)
                if os.path.islink(full):
                    continue
                try:
                    sz = os.path.getsize(full)
                except OSError:
                    continue
                if MIN_BYTES <= sz <= MAX_BYTES:
                    disp = prefix + "/" + os.path.relpath(full, d)
                    cands.append((hkey(seed, disp), disp, full))
    log("candidate files: %d" % len(cands))
    cands.sort()
    # Cap each top-level package so that one huge package (torch headers...) cannot dominate.
    per_top = collections.Counter()
    top_cap = max_bytes * 0.08
    seen = set()
    chosen, total = [], 0
    for h, disp, full in cands:
        if total >= max_bytes:
            break
        parts = disp.split("/")
        top = "/".join(parts[:2])
        if per_top[top] >= top_cap:
            continue
        try:
            with open(full, "rb") as f:
                raw = f.read()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = clean(text)
        if not acceptable(text):
            continue
        ch = hashlib.sha1(text.encode()).digest()
        if ch in seen:
            continue
        seen.add(ch)
        per_top[top] += len(text)
        total += len(text)
        chosen.append((disp, text, 1 if int(h[:8], 16) % 20 == 0 else 0))
    chosen.sort(key=lambda c: c[0])
    log("chosen files: %d, %.1f MB, held out %d" % (len(chosen), total / 1e6,
                                                    sum(c[2] for c in chosen)))
    return chosen


def train_tokenizer(texts, vocab_size, path, log):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(data.LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(data.SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t0 = time.time()
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    log("tokenizer trained in %.1f s, vocab %d" % (time.time() - t0, tok.get_vocab_size()))
    # Llama-3 (and loupe's llama-bpe) take a pre-token that is itself in the vocabulary whole.
    js = json.loads(tok.to_str())
    js["model"]["ignore_merges"] = True
    with open(path, "w", encoding="utf-8") as f:
        json.dump(js, f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-mb", type=float, default=96.0)
    ap.add_argument("--tok-mb", type=float, default=24.0, help="text the BPE is trained on")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--byte-tokenizer", action="store_true", help="CPU smoke tests without HF")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print("[prep %6.1fs] %s" % (time.time() - t0, msg), flush=True)

    files = select_files(args.seed, args.max_mb * 1e6, log)
    tok_path = os.path.join(args.out, "tokenizer.json")
    if args.byte_tokenizer:
        tok = data.ByteTok()
    else:
        if not os.path.exists(tok_path):
            # Train on a seeded sample of training files (selection is already hash-ordered
            # per file; re-order by a second hash so the sample spans all roots).
            order = sorted(range(len(files)), key=lambda i: hkey(args.seed + 1, files[i][0]))
            texts, nb = [], 0
            for i in order:
                if files[i][2] == 0 and nb < args.tok_mb * 1e6:
                    texts.append(files[i][1])
                    nb += len(files[i][1])
            train_tokenizer(texts, args.vocab, tok_path, log)
        else:
            # Fine-tuning puts the released model's tokenizer here (from_gguf.py): keep it.
            log("tokenizer: using the existing %s" % tok_path)
        tok = data.HFTok(tok_path)

    texts = [f[1] for f in files]
    encs = tok.encode_batch_offsets(texts)
    log("tokenized %d docs" % len(encs))
    lens = np.array([len(e[0]) for e in encs], dtype=np.int64)
    doc_off = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(lens, out=doc_off[1:])
    tokens = np.concatenate([np.asarray(e[0], dtype=np.uint16) for e in encs])
    name_doc, name_off, name_str = [], [], []
    for di, (f, (ids, starts)) in enumerate(zip(files, encs)):
        if not f[0].endswith(".py"):
            continue
        counts = collections.Counter(m.group(1) for m in DEF_RE.finditer(f[1]))
        starts = np.asarray(starts)
        for m in DEF_RE.finditer(f[1]):
            nm = m.group(1)
            if counts[nm] != 1 or len(nm) < 4:
                continue
            # Token index of the name's first character: the answer needs the def to survive
            # truncation, so record where it lies in the document's tokens.
            ti = int(np.searchsorted(starts, m.start(1), side="right")) - 1
            name_doc.append(di)
            name_off.append(max(ti, 0) + 4)
            name_str.append(nm)
    words = collections.Counter()
    for f in files[: max(1, len(files) // 4)]:
        if f[0].endswith((".md", ".rst", ".txt")) or f[0].startswith("doc/"):
            words.update(WORD_RE.findall(f[1]))
    word_list = sorted(w for w, c in words.most_common(3000))
    np.savez(os.path.join(args.out, "corpus.npz"), tokens=tokens, doc_off=doc_off,
             doc_split=np.array([f[2] for f in files], dtype=np.uint8),
             doc_path=np.array([f[0] for f in files]),
             name_doc=np.array(name_doc, dtype=np.int64),
             name_off=np.array(name_off, dtype=np.int64),
             name_str=np.array(name_str), words=np.array(word_list))
    info = {"files": len(files), "bytes": int(sum(len(f[1]) for f in files)),
            "tokens": int(len(tokens)), "held_out_files": int(sum(f[2] for f in files)),
            "names": len(name_str), "words": len(word_list), "seed": args.seed,
            "roots": roots(), "seconds": round(time.time() - t0, 1),
            "vocab": tok.vocab_size}
    with open(os.path.join(args.out, "prep.json"), "w") as f:
        json.dump(info, f, indent=1)
    log(json.dumps(info))


if __name__ == "__main__":
    main()
