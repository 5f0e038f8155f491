"""Evaluates a loupe-tiny GGUF: reads the file back (export_gguf.Reader), checks a pure-numpy
forward pass against PyTorch on the same weights, scores held-out retrieval cases with greedy
decoding under full attention, and measures how sparse the attention is at long context.

  python3 tests/models/eval.py --gguf tests/models/loupe-tiny.gguf --cache .cache/model-train \
      --lengths 4096,8192,16384,32768 --cases 100 --out eval.json

Tasks: passkey and kv (data.py's canonical cases), kvl (data.gen_kv_loupe: key/value lookup in
loupe's own case layout, the cases spread over --kvl-depths in equal blocks as `loupe bench niah`
spreads them, scored per depth too). --cells "kvl@16384:100,kv@16384:50,..." picks cells and
their order instead of tasks x lengths; --deadline stops starting cases after that many seconds
(the cells cut short say how many cases they ran).

Invariants: the weights evaluated are the ones in the GGUF (dequantised), not the training
checkpoint; cases come from data.py with held_out=True (held-out documents only) and their own
seed space (EVAL_SEED), so none of them was trained on. A case is correct when the generated text
up to <|eot_id|>, stripped, equals the answer exactly.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402
import export_gguf  # noqa: E402
from model import Config, Model, attention  # noqa: E402

EVAL_SEED = 900001


# ---- numpy reference forward ----------------------------------------------------------------

def np_forward(r, ids):
    """Logits [T, vocab] for one sequence, float32 numpy, straight from the GGUF tensors."""
    m = r.meta
    n_layer, n_head = m["llama.block_count"], m["llama.attention.head_count"]
    n_kv, hd = m["llama.attention.head_count_kv"], m["llama.rope.dimension_count"]
    eps, base = m["llama.attention.layer_norm_rms_epsilon"], m["llama.rope.freq_base"]
    emb = r.array("token_embd.weight")
    T = len(ids)
    x = emb[np.asarray(ids)]

    def norm(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    pos = np.arange(T, dtype=np.float64)[:, None]
    theta = base ** (-np.arange(0, hd // 2, dtype=np.float64) * 2.0 / hd)
    ang = pos * theta[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(v):  # v [T, H, hd]; pairs (2i, 2i+1)
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * cos[:, None, :] - b * sin[:, None, :]
        out[..., 1::2] = a * sin[:, None, :] + b * cos[:, None, :]
        return out

    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for i in range(n_layer):
        g = lambda n: r.array("blk.%d.%s.weight" % (i, n))  # noqa: E731
        h = norm(x, g("attn_norm"))
        q = rope((h @ g("attn_q").T).reshape(T, n_head, hd))
        k = rope((h @ g("attn_k").T).reshape(T, n_kv, hd))
        v = (h @ g("attn_v").T).reshape(T, n_kv, hd)
        outs = []
        for hh in range(n_head):
            kv = hh // (n_head // n_kv)
            s = q[:, hh] @ k[:, kv].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            outs.append(s @ v[:, kv])
        x = x + np.concatenate(outs, -1) @ g("attn_output").T
        h = norm(x, g("ffn_norm"))
        gate = h @ g("ffn_gate").T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ g("ffn_up").T)) @ g("ffn_down").T
    x = norm(x, r.array("output_norm.weight"))
    return x @ emb.T


# ---- torch model from the GGUF --------------------------------------------------------------

def load_model(path, dev):
    r = export_gguf.Reader(path)
    sd, cfg = export_gguf.state_from_gguf(r)
    model = Model(Config(**cfg))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    return r, model.to(dev).eval()


@torch.no_grad()
def generate(model, prompt, max_new, dev):
    """Greedy decoding with a KV cache; stops at <|eot_id|>. Returns the new ids."""
    cfg = model.cfg
    idx = torch.tensor(prompt, device=dev)[None]
    T = idx.shape[1]
    cos, sin = model.rope(T + max_new + 1, dev)
    rep = cfg.n_head // cfg.n_head_kv
    caches = []
    x = model.tok_emb(idx)
    for b in model.blocks:
        q, k, v = b.qkv(x, cos[:T], sin[:T])
        caches.append([k, v])
        a = attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))
        x = x + b.wo(a.transpose(1, 2).reshape(1, T, -1))
        h = b.ffn_norm(x)
        x = x + b.w_down(F.silu(b.w_gate(h)) * b.w_up(h))
    out = []
    nxt = int(model.logits(model.norm(x[:, -1:]))[0, -1].argmax())
    pos = T
    while len(out) < max_new:
        out.append(nxt)
        if nxt == data.EOT:
            break
        x = model.tok_emb(torch.tensor([[nxt]], device=dev))
        for b, c in zip(model.blocks, caches):
            q, k, v = b.qkv(x, cos[pos:pos + 1], sin[pos:pos + 1])
            c[0] = torch.cat([c[0], k], 2)
            c[1] = torch.cat([c[1], v], 2)
            a = attention(q, c[0].repeat_interleave(rep, 1), c[1].repeat_interleave(rep, 1),
                          causal=False)
            x = x + b.wo(a.transpose(1, 2).reshape(1, 1, -1))
            h = b.ffn_norm(x)
            x = x + b.w_down(F.silu(b.w_gate(h)) * b.w_up(h))
        nxt = int(model.logits(model.norm(x))[0, -1].argmax())
        pos += 1
    return out


def prompt_of(ids, ans):
    j = int(np.nonzero(ans)[0][0])  # target j is ids[j+1]: the prompt is ids[:j+1]
    return ids[:j + 1].tolist()


SEED_TAG = {"passkey": 0, "kv": 1, "kvl": 2}


def eval_cell(model, corp, task, T, n, dev, amp, depths=(), deadline=None):
    """(accuracy, misses, cases run, {depth: accuracy} for kvl)."""
    ok = 0
    misses = []
    per_depth = {}
    done = 0
    for i in range(n):
        if deadline is not None and time.time() > deadline:
            break
        rng = np.random.default_rng([EVAL_SEED, SEED_TAG[task], T, i])
        depth = None
        if task == "passkey":
            (ids, ans, _), answer = data.gen_passkey(corp, rng, T, True, canonical=True,
                                                     depth=(i + 0.5) / n)
        elif task == "kvl":
            depth = depths[i * len(depths) // n]
            (ids, ans, _), pair = data.gen_kv_loupe(corp, rng, T, True, depth=depth)
            answer = pair[1]
        else:
            (ids, ans, _), pair = data.gen_kv(corp, rng, T, True, canonical=True)
            answer = pair[1]
        prompt = prompt_of(ids, ans)
        with amp:
            gen = generate(model, prompt, 12, dev)
        text = corp.tok.decode([t for t in gen if t != data.EOT]).strip()
        done += 1
        hit = text == answer
        ok += hit
        if depth is not None:
            d = per_depth.setdefault(depth, [0, 0])
            d[0] += hit
            d[1] += 1
        if not hit and len(misses) < 3:
            misses.append((answer, text) if depth is None else (depth, answer, text))
    return (ok / max(1, done), misses, done,
            {"%g" % k: round(v[0] / v[1], 4) for k, v in sorted(per_depth.items())})


def parse_cells(args):
    """[(task, T, cases)] from --cells, else tasks x lengths with --cases each."""
    if not args.cells:
        return [(t, int(T), args.cases) for t in args.tasks.split(",")
                for T in args.lengths.split(",")]
    out = []
    for c in args.cells.split(","):
        task, rest = c.split("@")
        T, _, n = rest.partition(":")
        if task not in SEED_TAG:
            raise SystemExit("--cells: unknown task %r" % task)
        out.append((task, int(T), int(n) if n else args.cases))
    return out


@torch.no_grad()
def sparsity(model, corp, T, n_samples, n_queries, dev, amp):
    """Per layer: mean share of softmax mass in the top-100 keys per query head, and mean
    Mahalanobis distance to the key distribution for queries vs for keys."""
    cfg = model.cfg
    rep = cfg.n_head // cfg.n_head_kv
    res = [{"top100": [], "maha_q": [], "maha_k": []} for _ in range(cfg.n_layer)]
    for sidx in range(n_samples):
        rng = np.random.default_rng([EVAL_SEED, 7, T, sidx])
        if sidx % 2 == 0:
            (ids, ans, _), _ = data.gen_passkey(corp, rng, T, True, canonical=True)
            ids = prompt_of(ids, ans)
        else:
            ids, _, _ = data.gen_lm(corp, rng, T, True)
            ids = ids[:T].tolist()
        idx = torch.tensor(ids, device=dev)[None]
        L = idx.shape[1]
        cos, sin = model.rope(L, dev)
        x = model.tok_emb(idx)
        qpos = torch.cat([torch.arange(L - n_queries // 2, L, device=dev),
                          torch.randint(L // 2, L - n_queries // 2, (n_queries // 2,),
                                        generator=torch.Generator(device=dev).manual_seed(sidx),
                                        device=dev)])
        for li, b in enumerate(model.blocks):
            with amp:
                q, k, v = b.qkv(x, cos, sin)
            q, k = q[0].float(), k[0].float()  # [H, L, D], [Hkv, L, D]
            for hq in range(cfg.n_head):
                kk = k[hq // rep]
                s = (q[hq, qpos] @ kk.T) / math.sqrt(cfg.head_dim)
                causal = torch.arange(L, device=dev)[None, :] > qpos[:, None]
                p = torch.softmax(s.masked_fill(causal, float("-inf")), -1)
                res[li]["top100"].append(p.topk(100, -1).values.sum(-1).mean().item())
            for hk in range(cfg.n_head_kv):
                kk = k[hk].double()
                mu = kk.mean(0)
                cov = torch.cov((kk - mu).T) + 1e-6 * torch.eye(cfg.head_dim, device=dev,
                                                                 dtype=torch.float64)
                inv = torch.linalg.inv(cov)

                def md(z):
                    d = z.double() - mu
                    return torch.sqrt(((d @ inv) * d).sum(-1).clamp(min=0)).mean().item()
                res[li]["maha_k"].append(md(kk))
                qs = q[hk * rep:(hk + 1) * rep].reshape(-1, cfg.head_dim)
                res[li]["maha_q"].append(md(qs))
            with amp:
                x = b(x, cos, sin)
    return [{k: float(np.mean(v)) for k, v in r.items()} for r in res]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--cache", default=".cache/model-train")
    ap.add_argument("--lengths", default="4096,8192,16384,32768")
    ap.add_argument("--tasks", default="passkey,kv")
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--cells", default="", help="task@T[:cases],... in this order (overrides "
                    "--tasks/--lengths)")
    ap.add_argument("--kvl-depths", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--deadline", type=float, default=0, help="seconds from start after which "
                    "no case starts (0: none)")
    ap.add_argument("--sparsity-len", type=int, default=16384)
    ap.add_argument("--sparsity-samples", type=int, default=4)
    ap.add_argument("--sparsity-queries", type=int, default=512)
    ap.add_argument("--ckpt", default="", help="also compare with the training checkpoint")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.time()
    r, model = load_model(args.gguf, dev)
    tok = data.load_tok(args.cache)
    corp = data.Corpus(args.cache, tok)
    report = {"gguf": args.gguf, "bytes": os.path.getsize(args.gguf), "device": dev}

    # 1. The file reads back and a numpy forward matches PyTorch on the same weights.
    rng = np.random.default_rng([EVAL_SEED, 99])
    (ids, ans, _), _ = data.gen_passkey(corp, rng, 1024, True, canonical=True)
    ids = ids[:96].tolist()
    ref = np_forward(r, ids)
    with torch.no_grad():
        got = model.float()(torch.tensor(ids, device=dev)[None])[0].cpu().numpy()
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    report["numpy_vs_torch_max_rel"] = rel
    print("numpy vs torch logits, max |diff| / max |ref| = %.2e" % rel, flush=True)
    assert rel < 1e-3, "numpy forward disagrees with PyTorch"
    if args.ckpt:
        ck = torch.load(args.ckpt, map_location="cpu")
        m2 = Model(Config(**ck["config"]))
        m2.load_state_dict({k: v.float() for k, v in ck["model"].items()})
        with torch.no_grad():
            g2 = m2.to(dev)(torch.tensor(ids, device=dev)[None])[0].cpu().numpy()
        report["gguf_vs_ckpt_max_rel"] = float(np.abs(g2 - got).max() / np.abs(g2).max())
        report["gguf_vs_ckpt_argmax_agree"] = float((g2.argmax(-1) == got.argmax(-1)).mean())
        print("gguf vs checkpoint logits: max rel %.2e, argmax agreement %.3f" % (
            report["gguf_vs_ckpt_max_rel"], report["gguf_vs_ckpt_argmax_agree"]), flush=True)
        del m2

    amp = torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=(dev == "cuda"))
    # 2. Accuracy per task and length.
    acc, cases, by_depth = {}, {}, {}
    deadline = t0 + args.deadline if args.deadline > 0 else None
    depths = [float(x) for x in args.kvl_depths.split(",")]
    for task, T, n in parse_cells(args):
        t1 = time.time()
        a, misses, done, pd = eval_cell(model, corp, task, T, n, dev, amp, depths, deadline)
        if done == 0:
            print("acc %-8s T=%6d: skipped (deadline)" % (task, T), flush=True)
            continue
        key = "%s@%d" % (task, T)
        acc[key], cases[key] = a, done
        if pd:
            by_depth[key] = pd
        print("acc %-8s T=%6d: %.3f  (%d cases%s, %.1fs)%s misses %s" % (
            task, T, a, done, "" if done == n else " of %d: deadline" % n, time.time() - t1,
            " by depth %s" % pd if pd else "", misses), flush=True)
    report["accuracy"] = acc
    report["cases"] = cases
    report["kvl_by_depth"] = by_depth
    # 3. Sparsity at long context.
    if args.sparsity_len:
        t1 = time.time()
        sp = sparsity(model, corp, args.sparsity_len, args.sparsity_samples,
                      args.sparsity_queries, dev, amp)
        report["sparsity"] = {"T": args.sparsity_len, "per_layer": sp}
        for li, s in enumerate(sp):
            print("layer %d: top-100 mass %.3f  maha q %.2f  k %.2f  (%.1fs)" % (
                li, s["top100"], s["maha_q"], s["maha_k"], time.time() - t1), flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print("EVAL", json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
