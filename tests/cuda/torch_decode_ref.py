#!/usr/bin/env python3
"""torch_decode_ref.py [--ctx 4096,32768,131072] [--steps 24]: the PyTorch reference loop of
issue 4 — a plain eager Llama decode step in torch, bf16 weights of the Llama-3-8B shape (random,
N(0, 0.02^2)), the KV cache on the GPU — timed at each context length.

One step, for one token, as a straightforward eager implementation writes it: embedding row;
per layer RMSNorm, separate q/k/v matmuls, RoPE (rotate_half, cos/sin from a table), K/V
appended to a preallocated cache (n_kv_heads, max_ctx, head_dim) per layer,
F.scaled_dot_product_attention over the cache (GQA by viewing the group's query heads as the query
length, so K/V are not copied), output projection, RMSNorm, SwiGLU MLP; final norm, logits,
argmax fed back as the next token (kept on the GPU). No CUDA graphs, no fused kernels, no
torch.compile.

The cache holds random keys/values for the first `ctx` positions (a real prefill would only cost
time: decode cost depends on the cache length, not its contents). Reported per length: the
median wall time of `--steps` steps (each ends with torch.cuda.synchronize), after 3 warm-up
steps, and the floor = (weight bytes read per step + K/V bytes) / 2.97 TB/s.
Output: one CSV header and one row per length ("torch_eager,bf16,ctx,ms,floor_ms,ratio,peak_gib").
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctx", default="4096,32768,131072")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--embd", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ff", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--rope-base", type=float, default=500000.0)
    ap.add_argument("--hbm-gbs", type=float, default=2970.0)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dt = torch.bfloat16
    ctxs = [int(c) for c in a.ctx.split(",")]
    E, H, KV, FF, V, L = a.embd, a.heads, a.kv_heads, a.ff, a.vocab, a.layers
    hd, G = E // H, H // KV
    max_ctx = max(ctxs) + a.steps + 8
    torch.manual_seed(0)
    t0 = time.time()

    def w(*shape):
        return (torch.randn(*shape, device=dev, dtype=dt) * 0.02).contiguous()

    emb, out_w = w(V, E), w(V, E)
    out_norm = torch.ones(E, device=dev, dtype=dt)
    layers = []
    for _ in range(L):
        layers.append(dict(
            attn_norm=torch.ones(E, device=dev, dtype=dt), wq=w(H * hd, E), wk=w(KV * hd, E),
            wv=w(KV * hd, E), wo=w(E, H * hd), ffn_norm=torch.ones(E, device=dev, dtype=dt),
            wg=w(FF, E), wu=w(FF, E), wd=w(E, FF)))
    kc = [torch.empty(1, KV, max_ctx, hd, device=dev, dtype=dt) for _ in range(L)]
    vc = [torch.empty(1, KV, max_ctx, hd, device=dev, dtype=dt) for _ in range(L)]
    inv = a.rope_base ** (-torch.arange(0, hd, 2, device=dev, dtype=torch.float64) / hd)
    ang = torch.outer(torch.arange(max_ctx, device=dev, dtype=torch.float64), inv)
    cos = torch.cat((ang, ang), -1).cos().to(dt)  # (max_ctx, hd)
    sin = torch.cat((ang, ang), -1).sin().to(dt)
    weight_bytes = 2 * (sum(t.numel() for ly in layers for t in ly.values()) + out_w.numel()
                        + out_norm.numel() + E)
    print("torch_decode_ref: torch %s on %s, %d layers, %.2f GB of weights, built in %.1f s"
          % (torch.__version__, torch.cuda.get_device_name(dev) if cuda else "cpu",
             L, weight_bytes / 1e9, time.time() - t0), file=sys.stderr)

    def rms(x, g):
        xf = x.float()
        return g * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt)

    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), -1)

    def sdpa(q, k, v):
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v)
        p = torch.softmax((q @ k.transpose(-1, -2)).float() * hd ** -0.5, -1)  # torch < 2.0
        return p.to(dt) @ v

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(tok, pos):
        x = emb[tok].view(1, E)
        c, s = cos[pos], sin[pos]
        for il, ly in enumerate(layers):
            h = rms(x, ly["attn_norm"])
            q = (h @ ly["wq"].T).view(KV, G, hd)
            k = (h @ ly["wk"].T).view(KV, 1, hd)
            v = (h @ ly["wv"].T).view(KV, 1, hd)
            q = q * c + rot(q) * s
            k = k * c + rot(k) * s
            kc[il][0, :, pos] = k[:, 0]
            vc[il][0, :, pos] = v[:, 0]
            o = sdpa(q.view(1, KV, G, hd), kc[il][:, :, :pos + 1], vc[il][:, :, :pos + 1])
            x = x + o.reshape(1, H * hd) @ ly["wo"].T
            h = rms(x, ly["ffn_norm"])
            x = x + (F.silu(h @ ly["wg"].T) * (h @ ly["wu"].T)) @ ly["wd"].T
        logits = rms(x, out_norm) @ out_w.T
        return logits.argmax(-1)[0]

    print("model,precision,ctx,decode_ms,floor_ms,ratio,peak_gib")
    tok = torch.tensor(1, device=dev)
    with torch.no_grad():
        for ctx in ctxs:
            for t in kc + vc:  # random keys/values for the first ctx positions
                t[:, :, :ctx].normal_()
            pos = ctx
            times = []
            for i in range(3 + a.steps):
                sync()
                t1 = time.perf_counter()
                tok = step(tok, pos)
                sync()
                if i >= 3:
                    times.append(time.perf_counter() - t1)
                pos += 1
            times.sort()
            ms = 1e3 * times[len(times) // 2]
            kv_bytes = 2 * L * KV * hd * 2 * (ctx + 3 + a.steps / 2)
            floor = 1e3 * (weight_bytes + kv_bytes) / (a.hbm_gbs * 1e9)
            print("torch_eager,bf16,%d,%.3f,%.3f,%.2f,%.2f" % (
                ctx, ms, floor, ms / floor,
                (torch.cuda.max_memory_allocated(dev) if cuda else 0) / 2**30),
                flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
