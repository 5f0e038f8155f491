"""A minimal GGUF reader in numpy, for hf_parity.py and torch_decode_ref.py.

Reads the header, the metadata (every value type of GGUF v2/v3) and the tensor directory, and
returns a tensor's values as a float32 array shaped like PyTorch's (ne[1], ne[0]) for matrices.
Tensor types: F32, F16, BF16 and Q8_0 (blocks of 32: an f16 scale, then 32 int8; value = d·q).
Little-endian files only. Written for loupe's tests from the GGUF specification.
"""
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
T_F32, T_F16, T_Q8_0, T_BF16 = 0, 1, 8, 30
TYPE_NAMES = {T_F32: "F32", T_F16: "F16", T_Q8_0: "Q8_0", T_BF16: "BF16"}

# Metadata value types: struct format of the scalars; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}


class GGUFError(Exception):
    pass


class _Cursor:
    def __init__(self, f):
        self.f = f

    def read(self, n):
        b = self.f.read(n)
        if len(b) != n:
            raise GGUFError("truncated file")
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self):
        return self.read(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, vtype):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALARS and etype != 7:
                fmt = _SCALARS[etype]
                raw = self.read(n * struct.calcsize(fmt))
                return np.frombuffer(raw, dtype=np.dtype(fmt)).tolist()
            return [self.value(etype) for _ in range(n)]
        raise GGUFError("unknown metadata value type %d" % vtype)


class GGUF:
    """gguf = GGUF(path); gguf.kv[key]; gguf.tensors[name] = (type, ne, offset); gguf.array(name)."""

    def __init__(self, path):
        self.path = path
        self.kv = {}
        self.tensors = {}
        with open(path, "rb") as f:
            c = _Cursor(f)
            if c.read(4) != GGUF_MAGIC:
                raise GGUFError("%s: not a GGUF file" % path)
            self.version = c.unpack("<I")
            if self.version not in (2, 3):
                raise GGUFError("%s: GGUF version %d" % (path, self.version))
            n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
            for _ in range(n_kv):
                key = c.string()
                self.kv[key] = c.value(c.unpack("<I"))
            infos = []
            for _ in range(n_tensors):
                name = c.string()
                n_dims = c.unpack("<I")
                ne = [c.unpack("<Q") for _ in range(n_dims)]
                ttype, off = c.unpack("<I"), c.unpack("<Q")
                infos.append((name, ttype, ne, off))
            align = int(self.kv.get("general.alignment", 32))
            pos = f.tell()
            self.data_offset = (pos + align - 1) // align * align
        for name, ttype, ne, off in infos:
            self.tensors[name] = (ttype, ne, self.data_offset + off)

    def get(self, key, default=None):
        return self.kv.get(key, default)

    def array(self, name):
        """Values of tensor `name` as float32, shaped (ne[n-1], ..., ne[0])."""
        ttype, ne, off = self.tensors[name]
        n = int(np.prod(ne)) if ne else 1
        shape = tuple(reversed(ne)) if ne else (1,)
        if ttype == T_F32:
            x = np.fromfile(self.path, dtype="<f4", count=n, offset=off)
        elif ttype == T_F16:
            x = np.fromfile(self.path, dtype="<f2", count=n, offset=off).astype(np.float32)
        elif ttype == T_BF16:
            u = np.fromfile(self.path, dtype="<u2", count=n, offset=off)
            x = (u.astype(np.uint32) << 16).view(np.float32)
        elif ttype == T_Q8_0:
            if ne[0] % 32:
                raise GGUFError("%s: Q8_0 row of %d is not a multiple of 32" % (name, ne[0]))
            blk = np.dtype([("d", "<f2"), ("q", "i1", (32,))])
            b = np.fromfile(self.path, dtype=blk, count=n // 32, offset=off)
            x = (b["d"].astype(np.float32)[:, None] * b["q"].astype(np.float32)).reshape(-1)
        else:
            raise GGUFError("%s: tensor type %d is not supported here (F32, F16, BF16, Q8_0)"
                            % (name, ttype))
        return x.reshape(shape)

    def raw_bf16(self, name):
        """A BF16 tensor's raw 16-bit patterns as int16 (for a copy-free upload), or None."""
        ttype, ne, off = self.tensors[name]
        if ttype != T_BF16:
            return None
        n = int(np.prod(ne))
        return np.fromfile(self.path, dtype="<i2", count=n, offset=off).reshape(tuple(reversed(ne)))


def unpermute_qk(w, n_head):
    """Inverse of llama.cpp's converter permutation of attn_q/attn_k for `llama` files.

    The converter maps a Hugging Face weight W (n_head·hd, ...) to
    W.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2).reshape(W.shape), so that RoPE's pairs, which
    HF takes as halves (d, d + hd/2) of each head, become adjacent rows (2i, 2i+1). This undoes it:
    row 2i of a head goes back to i, row 2i+1 to i + hd/2. Works for weights and biases.
    """
    rows = w.shape[0]
    hd = rows // n_head
    rest = w.shape[1:]
    return w.reshape((n_head, hd // 2, 2) + rest).swapaxes(1, 2).reshape((rows,) + rest)


def permute_qk(w, n_head):
    """The converter's own direction (HF → GGUF), for tests of unpermute_qk."""
    rows = w.shape[0]
    hd = rows // n_head
    rest = w.shape[1:]
    return w.reshape((n_head, 2, hd // 2) + rest).swapaxes(1, 2).reshape((rows,) + rest)
