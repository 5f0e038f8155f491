"""Trains loupe-tiny (model.py) on the task mix of data.py, with a curriculum over lengths, and
stops by itself before a wall-clock limit so that one device command never overruns.

  python3 tests/models/train.py --cache .cache/model-train --steps 2400 --time-limit 520

Resumes from <cache>/ckpt.pt when present (model, optimizer, step); a checkpoint without an
optimizer state (weights brought back from an earlier machine) resumes with a short re-warmup.
Each run appends a line (steps, tokens, seconds, last losses) to <cache>/runs.jsonl.

Fine-tuning (run_on_device.sh finetune): --init CKPT starts from CKPT's weights at step 0 with a
fresh optimizer when the cache has no ckpt.pt yet, under a schedule of its own (--lr, --warmup,
--min-lr-frac, --steps), lengths (--phases) and task mix (--mix, data.TASKS shares); use another
--seed than the original run's so that its batches are new ones.

Invariants: the batch of step s is a pure function of (seed, s, T(s)), made by DataLoader workers
that each own the steps s ≡ start + w (mod workers), so a resumed run sees exactly the batches an
uninterrupted one would. The learning-rate schedule and the length curriculum depend only on s
and --steps.
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
from model import Config, Model, n_params  # noqa: E402

DEFAULT_PHASES = "0.10:1024,0.12:2048,0.18:4096,0.20:8192,0.30:16384,0.10:32768"


def parse_phases(s):
    out, acc = [], 0.0
    for part in s.split(","):
        f, t = part.split(":")
        acc += float(f)
        out.append((acc, int(t)))
    return [(a / acc, t) for a, t in out]


def seq_len(step, total, phases):
    x = step / max(1, total)
    for edge, T in phases:
        if x < edge:
            return T
    return phases[-1][1]


def parse_mix(s):
    """"lm=0.12,kv=0.3,..." -> shares in data.TASKS order (tasks not named get 0)."""
    shares = dict.fromkeys(data.TASKS, 0.0)
    for part in s.split(","):
        name, v = part.split("=")
        if name not in shares:
            raise SystemExit("--mix: unknown task %r (tasks: %s)" % (name, ", ".join(data.TASKS)))
        shares[name] = float(v)
    if sum(shares.values()) <= 0:
        raise SystemExit("--mix: shares sum to 0")
    return tuple(shares[t] for t in data.TASKS)


def lr_at(step, total, peak, warmup, floor=0.1, rewarm_from=None):
    w = warmup
    if rewarm_from is not None and step - rewarm_from < 50:
        w_scale = (step - rewarm_from + 1) / 50
    else:
        w_scale = 1.0
    if step < w:
        return peak * (step + 1) / w * w_scale
    p = min(1.0, (step - w) / max(1, total - w))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))) * w_scale


class Batches(torch.utils.data.IterableDataset):
    def __init__(self, cache, seed, start, total, tokens_per_step, phases, workers, mix):
        self.cache, self.seed, self.start, self.total = cache, seed, start, total
        self.tps, self.phases, self.workers = tokens_per_step, phases, max(1, workers)
        self.mix = mix
        self.corp = None

    def __iter__(self):
        wi = torch.utils.data.get_worker_info()
        w = wi.id if wi else 0
        if self.corp is None:
            self.corp = data.Corpus(self.cache, data.load_tok(self.cache))
        s = self.start
        while s < self.total:
            if (s - self.start) % self.workers == w:
                T = seq_len(s, self.total, self.phases)
                rows = max(1, self.tps // T)
                ids, ans, lm = data.make_batch(self.corp, self.seed, s, T, rows, mix=self.mix)
                yield s, torch.from_numpy(ids), torch.from_numpy(ans), torch.from_numpy(lm)
            s += 1


def save_ckpt(path, model, opt, step, cfg, args):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict() if opt else None,
                "step": step, "config": cfg.to_dict(), "args": vars(args)}, tmp)
    os.replace(tmp, path)


def bench(args):
    """Tokens/s of a training step and of batch generation (one process) per length."""
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = data.load_tok(args.cache)
    corp = data.Corpus(args.cache, tok)
    cfg = Config(vocab_size=tok.vocab_size)
    model = Model(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    print("params %.2fM" % (n_params(model) / 1e6), flush=True)
    for T in [int(x) for x in args.bench_lengths.split(",")]:
        rows = max(1, args.tokens_per_step // T)
        t0 = time.time()
        ids, ans, lm = data.make_batch(corp, 1, 0, T, rows)
        tgen = time.time() - t0
        x = torch.from_numpy(ids).to(dev).long()
        torch.cuda.reset_peak_memory_stats()
        for i in range(8):
            if i == 3:
                torch.cuda.synchronize()
                t1 = time.time()
            with torch.autocast(device_type=dev, dtype=torch.bfloat16):
                logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size),
                                   x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        dt = (time.time() - t1) / 5
        print("T %6d rows %4d: step %.3fs = %.0f tok/s, peak %.1f GB; batch gen %.2fs "
              "(%.0f tok/s one process)" % (T, rows, dt, rows * T / dt,
                                            torch.cuda.max_memory_allocated() / 2 ** 30, tgen,
                                            rows * T / tgen), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=".cache/model-train")
    ap.add_argument("--steps", type=int, default=7000, help="planned total steps (schedules)")
    ap.add_argument("--stop-at", type=int, default=0, help="stop after this step (0: --steps)")
    ap.add_argument("--tokens-per-step", type=int, default=131072)
    ap.add_argument("--phases", default=DEFAULT_PHASES)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--min-lr-frac", type=float, default=0.1, help="cosine floor / peak")
    ap.add_argument("--mix", default="", help="task shares, e.g. lm=0.2,kv=0.5,... "
                    "(default data.TRAIN_MIX)")
    ap.add_argument("--init", default="", help="weights to start from at step 0 with a fresh "
                    "optimizer when <cache>/ckpt.pt does not exist (fine-tuning)")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--time-limit", type=float, default=510.0, help="seconds of training")
    ap.add_argument("--ckpt-every", type=float, default=180.0, help="seconds")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--tiny", action="store_true", help="a small model for smoke tests")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--bench", action="store_true", help="time steps and data per length")
    ap.add_argument("--bench-lengths", default="1024,4096,16384,32768")
    args = ap.parse_args()
    if args.bench:
        return bench(args)
    t_start = time.time()
    torch.manual_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tok = data.load_tok(args.cache)
    cfg = Config(vocab_size=tok.vocab_size)
    if args.tiny:
        cfg = Config(vocab_size=tok.vocab_size, n_embd=256, n_layer=2, n_head=2, n_head_kv=1,
                     ffn=512)
    ckpt_path = os.path.join(args.cache, "ckpt.pt")
    model = Model(cfg)
    step, rewarm = 0, None
    ck = None
    src = ckpt_path if os.path.exists(ckpt_path) else args.init
    if src:
        ck = torch.load(src, map_location="cpu")
        if ck["config"] != cfg.to_dict():
            raise SystemExit("%s: model config %s differs from %s" % (src, ck["config"],
                                                                   cfg.to_dict()))
        model.load_state_dict({k: v.float() for k, v in ck["model"].items()})
        if src == ckpt_path:
            step = ck["step"]
        else:  # --init: the weights only; step 0 and a fresh optimizer
            ck["opt"] = None
    model.to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                fused=(dev == "cuda"))
    except TypeError:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    if ck is not None:
        if ck.get("opt"):
            opt.load_state_dict(ck["opt"])
        elif step > 0:
            rewarm = step
        # At step 0 a fresh optimizer is the start of a fine-tune: the normal warm-up applies.
        print("%s %s at step %d (optimizer %s)" % (
            "resumed from" if src == ckpt_path else "initialised from", src, step,
            "restored" if ck.get("opt") else "fresh, re-warming" if rewarm is not None else
            "fresh"), flush=True)
    del ck
    print("params %.2fM, config %s, device %s" % (n_params(model) / 1e6, cfg.to_dict(), dev),
          flush=True)
    phases = parse_phases(args.phases)
    mix = parse_mix(args.mix) if args.mix else data.TRAIN_MIX
    print("phases %s, mix %s, lr %.1e warm-up %d floor %.2f, %d steps planned" % (
        args.phases, dict(zip(data.TASKS, mix)), args.lr, args.warmup, args.min_lr_frac,
        args.steps), flush=True)
    stop_at = args.stop_at or args.steps
    ds = Batches(args.cache, args.seed, step, stop_at, args.tokens_per_step, phases, args.workers,
                 mix)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.workers,
                                     pin_memory=(dev == "cuda"), prefetch_factor=4
                                     if args.workers else None,
                                     persistent_workers=False)
    amp = torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=(dev == "cuda"))
    t_train = time.time()
    t_last_ck = t_train
    first_step = step
    tokens = 0
    acc = {"lm": 0.0, "ans": 0.0, "hit": 0.0, "n_ans": 0.0, "n": 0}
    t_log = time.time()
    tok_log = 0
    stopped_for_time = False
    last = {}
    for s, ids, ans, lm in dl:
        assert s == step, (s, step)
        ids = ids.to(dev, non_blocking=True).long()
        ans = ans.to(dev, non_blocking=True)
        lm = lm.to(dev, non_blocking=True)
        x, y = ids[:, :-1], ids[:, 1:]
        lr = lr_at(step, args.steps, args.lr, args.warmup, floor=args.min_lr_frac,
                   rewarm_from=rewarm)
        for g in opt.param_groups:
            g["lr"] = lr
        with amp:
            logits = model(x)
        ce = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1),
                             reduction="none").view_as(y)
        ansf, lmf = ans.float(), lm.float()
        n_ans = ansf.sum().clamp(min=1)
        l_ans = (ce * ansf).sum() / n_ans
        l_lm = (ce * lmf).sum() / lmf.sum().clamp(min=1)
        loss = l_ans + args.lm_weight * l_lm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            hit = ((logits.argmax(-1) == y) & ans).float().sum()
        acc["lm"] += l_lm.detach()
        acc["ans"] += l_ans.detach()
        acc["hit"] += hit
        acc["n_ans"] += ansf.sum()
        acc["n"] += 1
        ntok = x.numel()
        tokens += ntok
        tok_log += ntok
        step += 1
        if step % args.log_every == 0 or step == stop_at:
            n = acc["n"]
            dt = time.time() - t_log
            last = {"step": step, "T": x.shape[1], "lm": round(float(acc["lm"]) / n, 4),
                    "ans": round(float(acc["ans"]) / n, 4),
                    "ans_acc": round(float(acc["hit"]) / max(1.0, float(acc["n_ans"])), 4)}
            print("step %5d T %5d lr %.2e lm %.3f ans %.3f ans_acc %.3f  %.0f tok/s  %.0fs" % (
                step, x.shape[1], lr, last["lm"], last["ans"], last["ans_acc"], tok_log / dt,
                time.time() - t_start), flush=True)
            acc = {"lm": 0.0, "ans": 0.0, "hit": 0.0, "n_ans": 0.0, "n": 0}
            t_log, tok_log = time.time(), 0
        now = time.time()
        if now - t_last_ck > args.ckpt_every:
            save_ckpt(ckpt_path, model, opt, step, cfg, args)
            t_last_ck = now
        if now - t_train > args.time_limit:
            stopped_for_time = True
            break
        if step >= stop_at:
            break
    if dev == "cuda":
        torch.cuda.synchronize()
    secs = time.time() - t_train
    save_ckpt(ckpt_path, model, opt, step, cfg, args)
    rec = {"from_step": first_step, "to_step": step, "tokens": tokens,
           "train_seconds": round(secs, 1), "total_seconds": round(time.time() - t_start, 1),
           "stopped_for_time": stopped_for_time, "last_log": last,
           "lr": args.lr, "seed": args.seed, "init": args.init if first_step == 0 else "",
           "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
           "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
           if dev == "cuda" else 0}
    with open(os.path.join(args.cache, "runs.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    print("RUN", json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
