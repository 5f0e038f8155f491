"""Restores loupe-tiny's training inputs from the committed GGUF, for fine-tuning without the
original training state (its optimizer and checkpoint are gone; the GGUF is what remains).

  python3 tests/models/from_gguf.py restore --gguf tests/models/loupe-tiny.gguf \
      --out .cache/model-train [--check-roundtrip]
  python3 tests/models/from_gguf.py check-tokenizer --gguf tests/models/loupe-tiny.gguf \
      --tokenizer .cache/model-train/tokenizer.json --loupe build-devfull/app/loupe

`restore` writes into --out:
  tokenizer.json  for HF `tokenizers`, configured as prep.py's train_tokenizer configured the
                  original (Llama-3 split regex, ByteLevel without its own regex, ignore_merges,
                  ids 0..15 as special added tokens), vocab and merges from the GGUF keys
                  tokenizer.ggml.tokens / tokenizer.ggml.merges in id / rank order
  init.pt         train.py's checkpoint format: fp32 weights (the F16 values widened), step 0,
                  no optimizer state; train.py --init takes it
With --check-roundtrip it also exports those weights and that tokenizer.json again
(export_gguf.export, F16) and requires every tensor's bytes and every tokenizer key to be
identical to the input GGUF's.

`check-tokenizer` encodes a few texts (this repository's sources, a C header when there is one,
and a text of Unicode, emoji, CRLF, tabs, space runs, contractions, long numbers and special-token
text) with HF `tokenizers` through data.HFTok, exactly as training encodes, and with loupe's C
tokenizer (`loupe tokenize --model GGUF`); any difference is an error (exit 1), because training
on ids loupe would never produce would teach the model the wrong text.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402
import export_gguf  # noqa: E402

# The keys that define how text becomes ids; a restored tokenizer must give them back unchanged.
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.eot_token_id", "tokenizer.ggml.padding_token_id")


def fail(msg):
    print("from_gguf: error: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


# ---- tokenizer.json ---------------------------------------------------------------------------

def tokenizer_json(meta):
    """The HF `tokenizers` document for the GGUF's vocabulary (what prep.py's trainer saved,
    field for field, with this vocabulary and these merges)."""
    toks = meta["tokenizer.ggml.tokens"]
    merges = meta["tokenizer.ggml.merges"]
    types = meta["tokenizer.ggml.token_type"]
    n_sp = len(data.SPECIALS)
    if toks[:n_sp] != data.SPECIALS:
        fail("the GGUF's first %d tokens are not data.SPECIALS" % n_sp)
    if any(t != 3 for t in types[:n_sp]) or any(t != 1 for t in types[n_sp:]):
        fail("token types are not 3 (control) for ids 0..15 and 1 elsewhere")
    if meta.get("tokenizer.ggml.pre") != "llama-bpe":
        fail("tokenizer.ggml.pre is %r, not llama-bpe" % meta.get("tokenizer.ggml.pre"))
    if len(set(toks)) != len(toks):
        fail("the GGUF's vocabulary has duplicate tokens")
    for m in merges:
        # Byte-level symbols never hold a space (it is 'Ġ'), so "a b" splits one way only.
        if m.count(" ") != 1:
            fail("merge %r is not two symbols" % m)
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(data.SPECIALS)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": data.LLAMA3_PATTERN},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {s: i for i, s in enumerate(toks)},
                  # Strings "a b": the form every tokenizers version reads (newer ones also
                  # write pairs); the list order is the merge rank.
                  "merges": list(merges)},
    }


# ---- checkpoint -------------------------------------------------------------------------------

def train_config(meta_cfg):
    """model.Config for the GGUF, as train.py builds it (it compares configs with ==): the
    GGUF's float32 eps and base must round-trip to the defaults', every other field be equal."""
    from model import Config
    cfg = Config(vocab_size=meta_cfg["vocab_size"]).to_dict()
    for k, v in meta_cfg.items():
        want = cfg[k]
        same = (np.float32(v) == np.float32(want)) if isinstance(want, float) else v == want
        if not same:
            fail("GGUF %s = %r, but model.Config has %r (train.py would build another model)"
                 % (k, v, want))
    return cfg


def restore(args):
    import torch
    r = export_gguf.Reader(args.gguf)
    meta = r.meta
    if meta.get("general.architecture") != "llama":
        fail("%s is not a llama GGUF" % args.gguf)
    sd, meta_cfg = export_gguf.state_from_gguf(r)
    cfg = train_config(meta_cfg)
    os.makedirs(args.out, exist_ok=True)
    tok_path = os.path.join(args.out, "tokenizer.json")
    with open(tok_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(meta), f, ensure_ascii=False)
    os.replace(tok_path + ".tmp", tok_path)
    with open(args.gguf, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    ck_path = os.path.join(args.out, "init.pt")
    src_steps = int(meta.get("loupe.train.steps", 0))
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                "opt": None, "step": 0, "config": cfg,
                "args": {"from_gguf": os.path.basename(args.gguf), "gguf_sha256": sha,
                         "gguf_train_steps": src_steps}},
               ck_path + ".tmp")
    os.replace(ck_path + ".tmp", ck_path)
    n = sum(int(np.prod(v.shape)) for v in sd.values())
    print("restored %s (sha256 %s..., trained %d steps): %s (%d tokens, %d merges), %s "
          "(%.2f M parameters, step 0, no optimizer)" % (
              args.gguf, sha[:12], src_steps, tok_path, len(meta["tokenizer.ggml.tokens"]),
              len(meta["tokenizer.ggml.merges"]), ck_path, n / 1e6), flush=True)
    if args.check_roundtrip:
        roundtrip(r, ck_path, tok_path)


def roundtrip(r, ck_path, tok_path):
    """Export the restored checkpoint + tokenizer.json again and compare with the source."""
    import torch
    ck = torch.load(ck_path, map_location="cpu")
    state = {k: v.float().numpy() for k, v in ck["model"].items()}
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, "rt.gguf")
        extra = [("loupe.train.steps", export_gguf.U32, r.meta["loupe.train.steps"])] \
            if "loupe.train.steps" in r.meta else []
        export_gguf.export(state, ck["config"], tok_path, export_gguf.GGML_F16, out,
                           name=r.meta.get("general.name", "loupe-tiny"), extra_kv=extra)
        r2 = export_gguf.Reader(out)
        with open(out, "rb") as f:
            whole = f.read() == r.buf
    if sorted(r2.tensors) != sorted(r.tensors):
        fail("round trip: tensor names differ")
    for name, (gt, ne, raw) in r.tensors.items():
        gt2, ne2, raw2 = r2.tensors[name]
        if (gt, ne) != (gt2, ne2) or raw != raw2:
            fail("round trip: tensor %s differs (type %d/%d, shape %s/%s)" % (name, gt, gt2,
                                                                           ne, ne2))
    for k in TOKENIZER_KEYS:
        if r.meta.get(k) != r2.meta.get(k):
            fail("round trip: %s differs" % k)
    print("round trip: %d tensors byte-identical, tokenizer keys identical, whole file %s" % (
        len(r.tensors), "byte-identical" if whole else "differs only in metadata"), flush=True)


# ---- tokenizer check --------------------------------------------------------------------------

EDGE_TEXT = (
    "Ünïcödé façade — naïve café; 日本語のテキスト, 한국어, Ελληνικά, русский.\r\n"
    "Emoji: 😀👍🏽🧑‍💻 and flags 🇩🇪🇯🇵.\r\n\ttab\t\ttabs  two   three    four spaces\n"
    "Contractions: I'm, you're, it's, we'll, they'd, don't, I've, O'Neil's, IT'S.\n"
    "Numbers: 1234567890123 3.14159 0x1F2e 1,000,000 2026-11-23 007\n"
    "Special text stays text: <|eot_id|> <|begin_of_text|><|start_header_id|>user\n"
    "\n\n\n   \n  trailing spaces   \n"
    "3a4f09bc: 7d00e1f2\n0badcafe: 1c2d3e4f\n\"9e8d7c6b\": \"5a4b3c2d\",\n"
)


def check_texts(root):
    """(name, text) pairs: varied real files that exist on every machine with this tree, plus
    the edge-case text and a loupe-layout key/value context."""
    out = [("edge cases", EDGE_TEXT)]
    rng = np.random.default_rng(77)
    lines = "".join("%s: %s\n" % (data.hexid(rng), data.hexid(rng)) for _ in range(200))
    out.append(("kv layout", "<context>\n<sources>\ndata/table.txt\n</sources>\n"
                "<document path=\"data/table.txt\">\n" + lines + "</document>\n</context>\n\n"
                "What is the value for the key 3a4f09bc?"))
    for rel in ("tests/models/data.py", "tests/models/README.md", "app/niah_cases.c",
                "LICENSE", "/usr/include/stdio.h", "/usr/include/stdlib.h"):
        p = rel if rel.startswith("/") else os.path.join(root, rel)
        if os.path.isfile(p):
            with open(p, encoding="utf-8", errors="replace") as f:
                out.append((rel, f.read()))
    return out


def check_tokenizer(args):
    if not os.access(args.loupe, os.X_OK):
        fail("no loupe binary at %s (set LOUPE_BIN; the C tokenizer is the reference)"
             % args.loupe)
    tok = data.HFTok(args.tokenizer)
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    n_ids, bad = 0, 0
    for name, text in check_texts(root):
        hf = tok.encode(text)
        p = subprocess.run([args.loupe, "tokenize", "--model", args.gguf], input=text.encode(),
                           capture_output=True, timeout=60)
        if p.returncode != 0:
            fail("loupe tokenize failed on %s: %s" % (name, p.stderr.decode(errors="replace")))
        c = [int(x) for x in p.stdout.split()]
        n_ids += len(hf)
        if hf == c:
            print("tokenizer check: %-24s %6d ids equal" % (name, len(hf)), flush=True)
            continue
        bad += 1
        i = next((j for j in range(min(len(hf), len(c))) if hf[j] != c[j]), min(len(hf), len(c)))
        print("tokenizer check: %-24s DIFFERENT: HF %d ids, loupe %d ids, first difference at "
              "%d: HF %s loupe %s (text around: %r)" % (
                  name, len(hf), len(c), i, hf[i:i + 6], c[i:i + 6],
                  tok.decode(hf[max(0, i - 4):i + 6])), flush=True)
    if bad:
        fail("HF tokenizer.json and loupe's C tokenizer disagree on %d texts: the restored "
             "tokenizer.json is wrong, fine-tuning on its ids would be too" % bad)
    print("tokenizer check: all %d ids equal (HF tokenizers == loupe tokenize)" % n_ids,
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("restore")
    a.add_argument("--gguf", default=os.path.join(HERE, "loupe-tiny.gguf"))
    a.add_argument("--out", required=True)
    a.add_argument("--check-roundtrip", action="store_true")
    b = sub.add_parser("check-tokenizer")
    b.add_argument("--gguf", default=os.path.join(HERE, "loupe-tiny.gguf"))
    b.add_argument("--tokenizer", required=True)
    b.add_argument("--loupe", default=os.environ.get("LOUPE_BIN", "build-devfull/app/loupe"))
    args = ap.parse_args()
    if args.cmd == "restore":
        restore(args)
    else:
        check_tokenizer(args)


if __name__ == "__main__":
    main()
