"""A small GGUF v3 writer and reader (numpy only) and the exporter of loupe-tiny checkpoints.

  python3 tests/models/export_gguf.py --ckpt .cache/model-train/ckpt.pt \
      --tokenizer .cache/model-train/tokenizer.json --type f16 --out tests/models/loupe-tiny.gguf

Layout written: magic "GGUF", version 3, tensor count, kv count, the key/values, the tensor infos
(name, n_dims, ne[] with ne[0] the row length, ggml type, offset), padding to general.alignment
(32), then each tensor's bytes at a 32-aligned offset from the data section's start.

Invariants: tensors carry llama.cpp's names; a PyTorch weight [out, in] is stored as is with
ne = [in, out]; 1-D tensors (norms) are always F32; Q8_0 blocks are 32 values, an fp16 scale
d = max|x| / 127 and int8 q = round(x / d) (ggml's reference rounding, half away from zero). No
output.weight: the output is tied to token_embd. attn_q/attn_k are written without the NeoX
permutation because model.py already uses llama.cpp's interleaved-pair RoPE.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

GGML_F32, GGML_F16, GGML_Q8_0, GGML_BF16 = 0, 1, 8, 30
FILE_TYPE = {GGML_F32: 0, GGML_F16: 1, GGML_Q8_0: 7, GGML_BF16: 32}
TYPE_NAMES = {"f32": GGML_F32, "f16": GGML_F16, "q8_0": GGML_Q8_0, "bf16": GGML_BF16}
# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
Q8_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (32,))])
ALIGN = 32


# ---- quantisation -------------------------------------------------------------------------

def quantize_q8_0(x):
    x = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    amax = np.abs(x).max(axis=1)
    d = amax / 127.0
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)
    v = x * inv[:, None]
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)
    out = np.empty(len(x), dtype=Q8_BLOCK)
    out["d"] = d.astype(np.float16)
    out["qs"] = np.clip(q, -127, 127).astype(np.int8)
    return out.tobytes()


def to_bf16_bytes(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    return r.tobytes()


def encode_tensor(x, gtype):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if gtype == GGML_F32:
        return x.tobytes()
    if gtype == GGML_F16:
        assert np.abs(x).max() < 65504, "value out of F16 range"
        return x.astype(np.float16).tobytes()
    if gtype == GGML_BF16:
        return to_bf16_bytes(x)
    if gtype == GGML_Q8_0:
        return quantize_q8_0(x)
    raise ValueError("type %d" % gtype)


def decode_tensor(raw, gtype, n):
    if gtype == GGML_F32:
        return np.frombuffer(raw, dtype="<f4", count=n).copy()
    if gtype == GGML_F16:
        return np.frombuffer(raw, dtype="<f2", count=n).astype(np.float32)
    if gtype == GGML_BF16:
        u = np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16
        return u.view(np.float32)
    if gtype == GGML_Q8_0:
        b = np.frombuffer(raw, dtype=Q8_BLOCK, count=n // 32)
        return (b["qs"].astype(np.float32) * b["d"].astype(np.float32)[:, None]).reshape(-1)
    raise ValueError("type %d" % gtype)


def tensor_nbytes(gtype, n):
    return {GGML_F32: 4 * n, GGML_F16: 2 * n, GGML_BF16: 2 * n, GGML_Q8_0: 34 * (n // 32)}[gtype]


# ---- writer -------------------------------------------------------------------------------

def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _val(vtype, v):
    if vtype == STR:
        return _str(v)
    if vtype == BOOL:
        return struct.pack("<B", 1 if v else 0)
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           U64: "<Q", I64: "<q", F64: "<d"}[vtype]
    return struct.pack(fmt, v)


def write_gguf(path, kvs, tensors):
    """kvs: list of (key, vtype, value) with value a list for ARR as (ARR, (elem_type, list));
    tensors: list of (name, shape as PyTorch [.., out, in], gtype, bytes)."""
    out = bytearray()
    out += b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, vt, v in kvs:
        out += _str(key) + struct.pack("<I", vt)
        if vt == ARR:
            et, items = v
            out += struct.pack("<IQ", et, len(items))
            if et == STR:
                out += b"".join(_str(s) for s in items)
            else:
                fmt = {I32: "<i", U32: "<I", F32: "<f", U8: "<B"}[et]
                out += np.array(items, dtype=np.dtype(fmt)).tobytes()
        else:
            out += _val(vt, v)
    off = 0
    offsets = []
    for name, shape, gt, raw in tensors:
        ne = list(reversed(shape))
        out += _str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", gt, off)
        offsets.append(off)
        off += len(raw)
        off += (-off) % ALIGN
    out += b"\x00" * ((-len(out)) % ALIGN)
    with open(path + ".tmp", "wb") as f:
        f.write(out)
        pos = 0
        for (name, shape, gt, raw), o in zip(tensors, offsets):
            assert pos == o
            f.write(raw)
            pos += len(raw)
            pad = (-pos) % ALIGN
            f.write(b"\x00" * pad)
            pos += pad
    os.replace(path + ".tmp", path)


# ---- reader -------------------------------------------------------------------------------

class Reader:
    """Parses a GGUF file: .meta {key: value}, .tensors {name: (gtype, ne, raw bytes)}."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.p = 0
        assert self.buf[:4] == b"GGUF", "not a GGUF file"
        self.p = 4
        ver, nt, nkv = self._u("<IQQ")
        assert ver in (2, 3)
        self.meta = {}
        for _ in range(nkv):
            k = self._s()
            (vt,) = self._u("<I")
            self.meta[k] = self._v(vt)
        infos = []
        for _ in range(nt):
            name = self._s()
            (nd,) = self._u("<I")
            ne = list(self._u("<%dQ" % nd))
            gt, off = self._u("<IQ")
            infos.append((name, gt, ne, off))
        align = self.meta.get("general.alignment", ALIGN)
        base = self.p + ((-self.p) % align)
        self.tensors = {}
        for name, gt, ne, off in infos:
            n = int(np.prod(ne))
            s = base + off
            self.tensors[name] = (gt, ne, self.buf[s:s + tensor_nbytes(gt, n)])

    def _u(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.p)
        self.p += struct.calcsize(fmt)
        return v

    def _s(self):
        (n,) = self._u("<Q")
        s = self.buf[self.p:self.p + n].decode("utf-8")
        self.p += n
        return s

    def _v(self, vt):
        if vt == STR:
            return self._s()
        if vt == ARR:
            et, n = self._u("<IQ")
            return [self._v(et) for _ in range(n)]
        if vt == BOOL:
            return bool(self._u("<B")[0])
        fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
               U64: "<Q", I64: "<q", F64: "<d"}[vt]
        return self._u(fmt)[0]

    def array(self, name):
        """float32 array in PyTorch orientation (reversed ne)."""
        gt, ne, raw = self.tensors[name]
        n = int(np.prod(ne))
        return decode_tensor(raw, gt, n).reshape(list(reversed(ne)))


# ---- exporter -----------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable character map (HF ByteLevel)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def load_vocab(tokenizer_path, n_specials, vocab_size):
    """(tokens, token_types, merges) in id order."""
    import data
    if tokenizer_path and os.path.exists(tokenizer_path):
        with open(tokenizer_path, encoding="utf-8") as f:
            js = json.load(f)
        vocab = dict(js["model"]["vocab"])
        for at in js.get("added_tokens", []):
            vocab[at["content"]] = at["id"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in js["model"]["merges"]]
    else:  # ByteTok (CPU smoke tests): specials then the 256 bytes, no merges.
        b2u = bytes_to_unicode()
        vocab = {s: i for i, s in enumerate(data.SPECIALS)}
        for b in range(256):
            vocab[b2u[b]] = b + len(data.SPECIALS)
        merges = []
    toks = [None] * len(vocab)
    for s, i in vocab.items():
        toks[i] = s
    assert len(toks) == vocab_size and all(t is not None for t in toks)
    types = [3 if i < n_specials else 1 for i in range(len(toks))]
    return toks, types, merges


def export(state, cfg, tokenizer_path, gtype, out_path, name="loupe-tiny", extra_kv=()):
    import data
    sd = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    toks, types, merges = load_vocab(tokenizer_path, len(data.SPECIALS), cfg["vocab_size"])
    kvs = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, name),
        ("general.file_type", U32, FILE_TYPE[gtype]),
        ("general.quantization_version", U32, 2),
        ("llama.context_length", U32, cfg["context_length"]),
        ("llama.embedding_length", U32, cfg["n_embd"]),
        ("llama.block_count", U32, cfg["n_layer"]),
        ("llama.feed_forward_length", U32, cfg["ffn"]),
        ("llama.attention.head_count", U32, cfg["n_head"]),
        ("llama.attention.head_count_kv", U32, cfg["n_head_kv"]),
        ("llama.attention.key_length", U32, cfg["head_dim"]),
        ("llama.attention.value_length", U32, cfg["head_dim"]),
        ("llama.attention.layer_norm_rms_epsilon", F32, cfg["norm_eps"]),
        ("llama.rope.freq_base", F32, cfg["rope_base"]),
        ("llama.rope.dimension_count", U32, cfg["head_dim"]),
        ("llama.vocab_size", U32, cfg["vocab_size"]),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "llama-bpe"),
        ("tokenizer.ggml.tokens", ARR, (STR, toks)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, data.BOT),
        ("tokenizer.ggml.eos_token_id", U32, data.EOT),
        ("tokenizer.ggml.eot_token_id", U32, data.EOT),
        ("tokenizer.ggml.padding_token_id", U32, data.EOS),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.ggml.add_eos_token", BOOL, False),
        ("tokenizer.chat_template", STR, data.CHAT_TEMPLATE),
    ] + list(extra_kv)

    def t(name, key, force_f32=False):
        x = sd[key]
        gt = GGML_F32 if (force_f32 or x.ndim == 1) else gtype
        return (name, list(x.shape), gt, encode_tensor(x, gt))

    tensors = [t("token_embd.weight", "tok_emb.weight")]
    for i in range(cfg["n_layer"]):
        p = "blocks.%d." % i
        tensors += [
            t("blk.%d.attn_norm.weight" % i, p + "attn_norm.weight"),
            t("blk.%d.attn_q.weight" % i, p + "wq.weight"),
            t("blk.%d.attn_k.weight" % i, p + "wk.weight"),
            t("blk.%d.attn_v.weight" % i, p + "wv.weight"),
            t("blk.%d.attn_output.weight" % i, p + "wo.weight"),
            t("blk.%d.ffn_norm.weight" % i, p + "ffn_norm.weight"),
            t("blk.%d.ffn_gate.weight" % i, p + "w_gate.weight"),
            t("blk.%d.ffn_up.weight" % i, p + "w_up.weight"),
            t("blk.%d.ffn_down.weight" % i, p + "w_down.weight"),
        ]
    tensors.append(t("output_norm.weight", "norm.weight"))
    write_gguf(out_path, kvs, tensors)
    return os.path.getsize(out_path)


def state_from_gguf(r):
    """PyTorch-named float32 state dict and config from a loupe-tiny GGUF (for eval)."""
    m = r.meta
    cfg = {"vocab_size": len(m["tokenizer.ggml.tokens"]), "n_embd": m["llama.embedding_length"],
           "n_layer": m["llama.block_count"], "n_head": m["llama.attention.head_count"],
           "n_head_kv": m["llama.attention.head_count_kv"],
           "head_dim": m["llama.rope.dimension_count"], "ffn": m["llama.feed_forward_length"],
           "rope_base": float(m["llama.rope.freq_base"]),
           "norm_eps": float(m["llama.attention.layer_norm_rms_epsilon"]),
           "context_length": m["llama.context_length"]}
    sd = {"tok_emb.weight": r.array("token_embd.weight"), "norm.weight": r.array("output_norm.weight")}
    names = {"attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv",
             "attn_output": "wo", "ffn_norm": "ffn_norm", "ffn_gate": "w_gate", "ffn_up": "w_up",
             "ffn_down": "w_down"}
    for i in range(cfg["n_layer"]):
        for g, p in names.items():
            sd["blocks.%d.%s.weight" % (i, p)] = r.array("blk.%d.%s.weight" % (i, g))
    return sd, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--type", default="f16", choices=sorted(TYPE_NAMES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--base-steps", type=int, default=0, help="steps of the model a fine-tune "
                    "started from: loupe.train.steps counts them too, loupe.finetune.steps not")
    args = ap.parse_args()
    import torch
    ck = torch.load(args.ckpt, map_location="cpu")
    state = {k: v.float().numpy() for k, v in ck["model"].items()}
    extra = [("loupe.train.steps", U32, args.base_steps + int(ck["step"]))]
    if args.base_steps:
        extra.append(("loupe.finetune.steps", U32, int(ck["step"])))
    n = export(state, ck["config"], args.tokenizer, TYPE_NAMES[args.type], args.out,
               extra_kv=extra)
    print("wrote %s: %.2f MB (%s, step %d)" % (args.out, n / 1e6, args.type, ck["step"]))


if __name__ == "__main__":
    main()
