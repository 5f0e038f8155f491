"""The loupe-tiny model in PyTorch: a `llama`-architecture decoder (RMSNorm, grouped-query
attention with head dimension 128, SwiGLU, RoPE) whose tensors map one to one onto llama.cpp's
GGUF names (export_gguf.py).

Invariants:
- RoPE rotates interleaved adjacent pairs (x[2i], x[2i+1]) of each head by pos * base^(-2i/d):
  llama.cpp's "normal" rope, which is what loupe applies to Q/K as stored. So the exporter writes
  attn_q/attn_k unchanged (no NeoX row permutation).
- Query head h reads KV head h // (n_head / n_head_kv) (llama.cpp's grouping).
- Weights are nn.Linear [out, in]; GGUF stores the same bytes with ne = [in, out].
- The output projection is tied to the token embedding (no output.weight in the GGUF).
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 8192
    n_embd: int = 512
    n_layer: int = 6
    n_head: int = 4
    n_head_kv: int = 1
    head_dim: int = 128
    ffn: int = 1024
    rope_base: float = 500000.0
    norm_eps: float = 1e-5
    context_length: int = 32768

    def to_dict(self):
        return asdict(self)


def rope_tables(cfg, n_pos, device):
    """cos/sin [n_pos, head_dim/2] in float32 (interleaved-pair convention)."""
    half = cfg.head_dim // 2
    inv = cfg.rope_base ** (-torch.arange(0, half, dtype=torch.float64, device=device) * 2.0
                            / cfg.head_dim)
    pos = torch.arange(n_pos, dtype=torch.float64, device=device)
    ang = pos[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
    """x [B, H, T, D]; pairs (2i, 2i+1) rotated by angle pos*theta_i."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    c = cos[None, None, :, :]
    s = sin[None, None, :, :]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.reshape(x.shape).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def attention(q, k, v, causal=True):
    """Attention, q [B,H,Tq,D], k/v [B,H,Tk,D] (already expanded to H heads); causal needs
    Tq == Tk, non-causal lets every query see every key (one decode step)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    # Fallback for old torch (CPU smoke tests only).
    T = q.shape[2]
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~mask, float("-inf"))
    return (torch.softmax(s, -1) @ v.float()).to(q.dtype)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.n_embd, cfg.head_dim
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.wq = nn.Linear(d, cfg.n_head * hd, bias=False)
        self.wk = nn.Linear(d, cfg.n_head_kv * hd, bias=False)
        self.wv = nn.Linear(d, cfg.n_head_kv * hd, bias=False)
        self.wo = nn.Linear(cfg.n_head * hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg.norm_eps)
        self.w_gate = nn.Linear(d, cfg.ffn, bias=False)
        self.w_up = nn.Linear(d, cfg.ffn, bias=False)
        self.w_down = nn.Linear(cfg.ffn, d, bias=False)

    def qkv(self, x, cos, sin):
        """Post-RoPE q [B,H,T,D], k/v [B,Hkv,T,D]."""
        cfg = self.cfg
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = self.wk(h).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        v = self.wv(h).view(B, T, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin):
        cfg = self.cfg
        B, T, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        rep = cfg.n_head // cfg.n_head_kv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        a = attention(q, k, v).transpose(1, 2).reshape(B, T, cfg.n_head * cfg.head_dim)
        x = x + self.wo(a)
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self._rope = None
        self.reset_parameters()

    def reset_parameters(self):
        std = 0.02
        nn.init.normal_(self.tok_emb.weight, std=std)
        for b in self.blocks:
            for lin in (b.wq, b.wk, b.wv, b.w_gate, b.w_up):
                nn.init.normal_(lin.weight, std=std)
            # Residual projections scaled down with depth (GPT-2 style).
            for lin in (b.wo, b.w_down):
                nn.init.normal_(lin.weight, std=std / math.sqrt(2 * self.cfg.n_layer))

    def rope(self, T, device):
        if self._rope is None or self._rope[0].shape[0] < T or self._rope[0].device != device:
            self._rope = rope_tables(self.cfg, max(T, 1024), device)
        cos, sin = self._rope
        return cos[:T], sin[:T]

    def hidden(self, idx):
        """Final normed hidden states [B, T, n_embd]."""
        T = idx.shape[1]
        cos, sin = self.rope(T, idx.device)
        x = self.tok_emb(idx)
        for b in self.blocks:
            x = b(x, cos, sin)
        return self.norm(x)

    def logits(self, h):
        return h @ self.tok_emb.weight.t().to(h.dtype)

    def forward(self, idx):
        return self.logits(self.hidden(idx))


def n_params(model):
    return sum(p.numel() for p in model.parameters())
