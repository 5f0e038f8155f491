"""Training and held-out cases for loupe-tiny: plain language modelling over real text, and
retrieval tasks as Llama-3 chat turns over long haystacks laid out as docs/LAYOUT.md describes.

Tasks (the first question template of each is the canonical one used for evaluation):
  lm         <|begin_of_text|> + a layout context of real documents; loss on every token.
  passkey    "The pass key is 48213. Remember it." hidden at a line boundary in one document;
             Q "What is the pass key?"  A "48213".
  needles    2..8 lines "The special magic number for {word} is: {7 digits}."; one asked:
             Q "What is the special magic number for {word}?"  A the number.
  kv         a document of lines "{key}: {value}" (8 hex characters, first one a digit, so
             that a key tokenizes the same after a newline as after a space); one asked:
             Q "What is the value for the key {key}?"  A the value.
  whichfile  Python sources; Q "Which file defines {name}?" (a top-level def/class found in
             exactly one document) A the document's path.
  kvl        kv exactly as loupe's own case generator lays it out (app/niah_cases.c, what
             `loupe bench niah` scores): the table is the context's only document, no <tree>,
             nothing after its last line; the first pair asked is the line at a chosen depth of
             the context (often 0.6..1, often the very last line, right before the question).
             Fine-tuning only (share 0 in TRAIN_MIX, which keeps the original batches).
Retrieval samples may carry further question/answer turns over the same context.

Every sample is one row of T+1 token ids: ids[:-1] are the inputs, ids[1:] the targets, with two
per-target masks: `ans` (answer tokens and their <|eot_id|>) and `lm` (context tokens). Rows shorter
than T+1 are padded at the end with <|end_of_text|> (masked out; causal attention never looks
forward, so padding changes nothing before it).

Determinism: a batch is a pure function of (seed, step, T, held_out); held-out cases draw only
documents of the held-out split and use a separate seed space, so training never sees them.
Text pieces are tokenized separately only at boundaries where the Llama-3 pre-tokenizer splits
anyway (after a newline followed by a non-space), so ids equal the ids of the whole text except at
rare blank-line joins.
"""
import os

import numpy as np

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Ids 0..15 (Llama-3 order of its first ten specials, then reserved ones).
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
            "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|reserved_special_token_4|>", "<|eot_id|>"] + [
            "<|reserved_special_token_%d|>" % i for i in range(5, 11)]
BOT, EOS, SH, EH, EOT = 0, 1, 6, 7, 9

CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

# A new task goes at the end with share 0 in TRAIN_MIX: numpy's choice() then draws the same
# tasks as before, so the original run's batches stay reproducible.
TASKS = ("lm", "passkey", "needles", "kv", "whichfile", "kvl")
TRAIN_MIX = (0.22, 0.16, 0.16, 0.30, 0.16, 0.0)

PASSKEY_NEEDLES = ["The pass key is {k}. Remember it.",
                   "The pass key is {k}. Remember it. {k} is the pass key."]
PASSKEY_QS = ["What is the pass key?", "What is the pass key? Answer with the number only.",
              "Somewhere in the context there is a pass key. What is it?"]
NEEDLE_FMT = "The special magic number for {w} is: {n}."
NEEDLE_QS = ["What is the special magic number for {w}?",
             "What special magic number is mentioned for {w}?"]
KV_QS = ["What is the value for the key {k}?", "Which value does the key {k} have?"]
FILE_QS = ["Which file defines {n}?", "In which file is {n} defined?"]
SYNTH_FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
                "There and back again.\n")


# ---- tokenizers ---------------------------------------------------------------------------

class HFTok:
    """HF `tokenizers` byte-level BPE; special-token text inside documents stays plain text."""

    def __init__(self, path):
        from tokenizers import Tokenizer
        self.tk = Tokenizer.from_file(path)
        self.tk.encode_special_tokens = True
        self.vocab_size = self.tk.get_vocab_size()
        self.ends_nl = np.zeros(self.vocab_size, dtype=bool)
        for s, i in self.tk.get_vocab().items():
            # 'Ċ' is the byte-level stand-in for '\n'.
            self.ends_nl[i] = s.endswith("\u010a") and i >= len(SPECIALS)
        assert [self.tk.token_to_id(s) for s in SPECIALS] == list(range(len(SPECIALS)))

    def encode(self, text):
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tk.encode_batch(texts, add_special_tokens=False)]

    def encode_batch_offsets(self, texts):
        out = []
        for e in self.tk.encode_batch(texts, add_special_tokens=False):
            out.append((e.ids, [o[0] for o in e.offsets]))
        return out

    def decode(self, ids):
        return self.tk.decode([int(i) for i in ids if i >= len(SPECIALS)],
                              skip_special_tokens=False)


class ByteTok:
    """Bytes as tokens (id = byte + 16), for CPU smoke tests where HF tokenizers is missing."""

    def __init__(self):
        self.vocab_size = 256 + len(SPECIALS)
        self.ends_nl = np.zeros(self.vocab_size, dtype=bool)
        self.ends_nl[10 + 16] = True

    def encode(self, text):
        return [b + 16 for b in text.encode()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def encode_batch_offsets(self, texts):
        out = []
        for t in texts:
            ids, starts = [], []
            for ci, ch in enumerate(t):
                for b in ch.encode():
                    ids.append(b + 16)
                    starts.append(ci)
            out.append((ids, starts))
        return out

    def decode(self, ids):
        return bytes(int(i) - 16 for i in ids if i >= 16).decode("utf-8", "replace")


def load_tok(cache_dir):
    p = os.path.join(cache_dir, "tokenizer.json")
    return HFTok(p) if os.path.exists(p) else ByteTok()


# ---- corpus -------------------------------------------------------------------------------

class Corpus:
    def __init__(self, cache_dir, tok):
        z = np.load(os.path.join(cache_dir, "corpus.npz"))
        self.tok = tok
        self.tokens = z["tokens"]
        self.doc_off = z["doc_off"]
        self.split = z["doc_split"]
        self.paths = [str(p) for p in z["doc_path"]]
        self.words = [str(w) for w in z["words"]]
        nd, no, ns = z["name_doc"], z["name_off"], z["name_str"]
        self.names = {}
        for d, o, s in zip(nd.tolist(), no.tolist(), ns.tolist()):
            self.names.setdefault(d, []).append((o, str(s)))
        self.pool = {False: np.nonzero(self.split == 0)[0], True: np.nonzero(self.split == 1)[0]}
        py = [d for d in self.names if self.paths[d].endswith(".py")]
        pys = set(py)
        self.py_pool = {h: np.array([d for d in self.pool[h] if d in pys], dtype=np.int64)
                        for h in (False, True)}
        self._enc_cache = {}
        self.close_doc = np.array(tok.encode("</document>\n"), dtype=np.int32)
        self.nl2 = tok.encode("\n\n")
        self.user = tok.encode("user")
        self.assistant = tok.encode("assistant")

    def doc(self, d):
        return self.tokens[self.doc_off[d]:self.doc_off[d + 1]].astype(np.int32)

    def enc(self, s):
        v = self._enc_cache.get(s)
        if v is None:
            v = np.array(self.tok.encode(s), dtype=np.int32)
            if len(self._enc_cache) < 100000:
                self._enc_cache[s] = v
        return v


def esc_attr(s):
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def tree_text(paths):
    """<tree> body: directories end in '/', two spaces a level, entries sorted bytewise."""
    root = {}
    for p in paths:
        node = root
        parts = p.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part + "/", {})
        node[parts[-1]] = None
    lines = []

    def walk(node, depth):
        for name in sorted(node, key=lambda s: s.encode()):
            lines.append("  " * depth + name)
            if node[name] is not None:
                walk(node[name], depth + 1)
    walk(root, 0)
    return "\n".join(lines) + "\n"


class Doc:
    __slots__ = ("path", "body", "fixed", "src", "full_len")

    def __init__(self, path, body, fixed, src=-1):
        self.path, self.body, self.fixed, self.src = path, body, fixed, src
        self.full_len = len(body)


def truncate_body(corp, d, keep):
    """First `keep`-ish tokens of d.body plus the layout's truncation line, at most keep tokens."""
    m = d.full_len
    mark = corp.enc("[... truncated: %d of %d tokens kept ...]\n" % (keep, m))
    k = max(0, keep - len(mark) - 1)
    head = d.body[:k]
    if k > 0 and not corp.tok.ends_nl[head[-1]]:
        head = np.concatenate([head, corp.enc("\n")])
    d.body = np.concatenate([head, mark])


def assemble(corp, docs, with_tree):
    """Context tokens '<context>\\n...</document>\\n' (the closing </context> comes with the
    question) and the [start, end) of each document body in them."""
    paths = [d.path for d in docs]
    head = "<context>\n<sources>\n" + "".join(p + "\n" for p in paths) + "</sources>\n"
    if with_tree:
        head += "<tree>\n" + tree_text(paths) + "</tree>\n"
    parts = [corp.enc(head)]
    regions = []
    pos = len(parts[0])
    for d in docs:
        h = corp.enc('<document path="%s">\n' % esc_attr(d.path))
        parts.append(h)
        pos += len(h)
        parts.append(d.body)
        regions.append((pos, pos + len(d.body)))
        pos += len(d.body)
        parts.append(corp.close_doc)
        pos += len(corp.close_doc)
    return np.concatenate(parts), regions


def make_context(corp, rng, budget, fixed, held_out, pool=None, cap=None):
    """Fills about `budget` tokens (never more) with the fixed docs plus filler documents from
    the split, in random order; the last filler is cut with the truncation line."""
    pool = corp.pool[held_out] if pool is None else pool
    with_tree = rng.random() < 0.7
    docs = list(fixed)
    est = sum(len(d.body) + 3 * len(d.path) // 3 + 12 for d in docs) + 40
    cap = cap or int(rng.choice([600, 1500, 4000, 20000]))
    guard = 0
    while est < budget and guard < 400:
        guard += 1
        di = int(pool[rng.integers(len(pool))])
        d = Doc(corp.paths[di], corp.doc(di), False, di)
        if len(d.body) > cap:
            truncate_body(corp, d, int(rng.integers(cap // 2, cap + 1)))
        docs.append(d)
        est += len(d.body) + len(d.path) // 2 + 16
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    for _ in range(12):
        ctx, regions = assemble(corp, docs, with_tree)
        over = len(ctx) - budget
        if over <= 0:
            return ctx, regions, docs
        fill = [i for i, d in enumerate(docs) if not d.fixed]
        if not fill:
            # Only fixed docs: cut the longest one (callers re-check what survived).
            i = max(range(len(docs)), key=lambda j: len(docs[j].body))
        else:
            i = fill[-1]
        d = docs[i]
        keep = len(d.body) - over - 8
        if keep < 48 and fill:
            docs.pop(i)
        else:
            truncate_body(corp, d, max(keep, 16))
    ctx, regions = assemble(corp, docs, with_tree)
    return ctx[:budget], regions, docs


def insert_at(corp, ctx, regions, depth, needle, avoid=()):
    """Inserts `needle` tokens at a line boundary inside a document body near `depth` (0..1 of
    the context); returns the new context and the shifted regions."""
    n = len(ctx)
    target = int(depth * n)
    cand = [r for r in regions if r[1] - r[0] > 2 and r not in avoid]
    if not cand:
        cand = regions or [(n, n + 1)]
    # The body holding the target, else the nearest one.
    best = min(cand, key=lambda r: 0 if r[0] <= target < r[1] else min(abs(target - r[0]),
                                                                       abs(target - r[1])))
    s, e = best
    t = min(max(target, s), e - 1, n)
    nl = np.nonzero(corp.tok.ends_nl[ctx[s:t]])[0]
    pos = s + int(nl[-1]) + 1 if len(nl) else s
    out = np.concatenate([ctx[:pos], needle, ctx[pos:]])
    k = len(needle)
    new_regions = [(a + k if a >= pos else a, b + k if b >= pos else b) for a, b in regions]
    return out, new_regions


def hexid(rng):
    digits = "0123456789"
    hexd = "0123456789abcdef"
    return digits[rng.integers(10)] + "".join(hexd[i] for i in rng.integers(16, size=7))


def kv_body(corp, rng, n_tokens, json_style):
    """Lines of random key/value pairs filling about n_tokens; returns (tokens, pairs)."""
    pairs, seen = [], set()
    est = 11 if not json_style else 14
    n = max(4, n_tokens // est + 8)
    while len(pairs) < n:
        k = hexid(rng)
        if k not in seen:
            seen.add(k)
            pairs.append((k, hexid(rng)))
    if json_style:
        lines = ['"%s": "%s",\n' % p for p in pairs]
    else:
        lines = ["%s: %s\n" % p for p in pairs]
    encs = corp.tok.encode_batch(lines)
    lens = np.cumsum([len(e) for e in encs])
    m = max(2, int(np.searchsorted(lens, n_tokens, side="right")))
    body = np.array([t for e in encs[:m] for t in e], dtype=np.int32)
    return body, pairs[:m]


# ---- samples ------------------------------------------------------------------------------

def user_prefix(corp):
    return np.concatenate([[BOT, SH], corp.user, [EH], corp.nl2]).astype(np.int32)


def turn_tokens(corp, first_tail, q, a):
    """(tokens, answer mask) of one question/answer; the first question carries the context's
    closing tag and the blank line before it."""
    if first_tail:
        qt = corp.enc("</context>\n\n" + q)
        pre = []
    else:
        qt = corp.enc(q)
        pre = np.concatenate([[SH], corp.user, [EH], corp.nl2])
    at = corp.enc(a)
    toks = np.concatenate([pre, qt, [EOT, SH], corp.assistant, [EH], corp.nl2, at, [EOT]])
    mask = np.zeros(len(toks), dtype=bool)
    mask[len(toks) - len(at) - 1:] = True
    return toks.astype(np.int32), mask


def finish(corp, T, ctx_part, turns):
    """Joins prefix + context + turns into a row of T+1 ids with the two target masks."""
    pre = user_prefix(corp)
    pieces = [pre, ctx_part] + [t for t, _ in turns]
    ids = np.concatenate(pieces).astype(np.int32)
    ans = np.concatenate([np.zeros(len(pre) + len(ctx_part), bool)] + [m for _, m in turns])
    lm = np.zeros(len(ids), bool)
    lm[len(pre):len(pre) + len(ctx_part)] = True
    return pad_row(ids, ans, lm, T)


def pad_row(ids, ans, lm, T):
    n = T + 1
    if len(ids) > n:  # never expected; keep the row valid anyway
        ids, ans, lm = ids[:n], ans[:n], lm[:n]
    pad = n - len(ids)
    ids = np.concatenate([ids, np.full(pad, EOS, np.int32)])
    ans = np.concatenate([ans, np.zeros(pad, bool)])
    lm = np.concatenate([lm, np.zeros(pad, bool)])
    # Masks are per target: target j is ids[j+1].
    return ids, ans[1:], lm[1:]


def gen_lm(corp, rng, T, held_out):
    ctx, _, _ = make_context(corp, rng, T, [], held_out)
    ids = np.concatenate([[BOT], ctx]).astype(np.int32)
    lm = np.ones(len(ids), bool)
    lm[0] = False
    return pad_row(ids, np.zeros(len(ids), bool), lm, T)


def qa_budget(corp, T, turns):
    return T + 1 - len(user_prefix(corp)) - sum(len(t) for t, _ in turns) - 4


def gen_passkey(corp, rng, T, held_out, canonical=False, depth=None, key=None):
    k = key if key is not None else str(int(rng.integers(10000, 100000)) if canonical or
                                        rng.random() < 0.7 else
                                        int(rng.integers(10 ** 3, 10 ** 7)))
    nfmt = PASSKEY_NEEDLES[0] if canonical else PASSKEY_NEEDLES[int(rng.integers(2))]
    q = PASSKEY_QS[0] if canonical else PASSKEY_QS[int(rng.integers(len(PASSKEY_QS)))]
    needle = corp.enc(nfmt.format(k=k) + "\n")
    turns = [turn_tokens(corp, True, q, k)]
    budget = qa_budget(corp, T, turns) - len(needle)
    fixed = []
    if not canonical and rng.random() < 0.2:
        synth = corp.enc(SYNTH_FILLER)
        reps = max(1, budget // len(synth))
        fixed = [Doc("notes/filler.txt", np.tile(synth, reps)[:max(8, budget - 64)], True)]
    ctx, regions, _ = make_context(corp, rng, budget, fixed, held_out)
    d = rng.random() if depth is None else depth
    ctx, _ = insert_at(corp, ctx, regions, d, needle)
    return finish(corp, T, ctx, turns), k


def gen_needles(corp, rng, T, held_out):
    n = int(rng.integers(2, min(9, 3 + T // 512)))
    words = rng.choice(len(corp.words), size=n, replace=False)
    items = [(corp.words[i], str(int(rng.integers(10 ** 6, 10 ** 7)))) for i in words]
    nturn = int(rng.integers(1, n + 1))
    ask = rng.permutation(n)[:nturn]
    turns = []
    for j, ai in enumerate(ask):
        w, num = items[ai]
        q = NEEDLE_QS[0] if rng.random() < 0.7 else NEEDLE_QS[1]
        turns.append(turn_tokens(corp, j == 0, q.format(w=w), num))
    needles = [corp.enc(NEEDLE_FMT.format(w=w, n=num) + "\n") for w, num in items]
    budget = qa_budget(corp, T, turns) - sum(len(x) for x in needles)
    ctx, regions, _ = make_context(corp, rng, budget, [], held_out)
    for nd in needles:
        ctx, regions = insert_at(corp, ctx, regions, rng.random(), nd)
    return finish(corp, T, ctx, turns)


def gen_kv(corp, rng, T, held_out, canonical=False, nturn=None, _retry=0):
    json_style = (not canonical) and rng.random() < 0.25
    nturn = nturn or (1 if canonical else int(rng.integers(1, 9)))
    # Budget before the questions are known: questions are ~20 tokens each.
    room = T + 1 - 10 - nturn * 36
    frac = 1.0 if canonical or rng.random() < 0.4 else float(rng.uniform(0.05, 0.9))
    path = "data/%s.%s" % (corp.words[int(rng.integers(len(corp.words)))],
                           "json" if json_style else "txt")
    ntok = int(room * frac) - 60 - 4 * len(path) - 64 * _retry
    body, pairs = kv_body(corp, rng, max(ntok, 40), json_style)
    if json_style:
        body = np.concatenate([corp.enc("{\n"), body, corp.enc("}\n")])
    ask = rng.permutation(len(pairs))[:nturn]
    turns = []
    for j, ai in enumerate(ask):
        k, v = pairs[ai]
        q = KV_QS[0] if canonical or rng.random() < 0.7 else KV_QS[1]
        turns.append(turn_tokens(corp, j == 0, q.format(k=k), v))
    budget = qa_budget(corp, T, turns)
    kvdoc = Doc(path, body, True)
    ctx, _, docs = make_context(corp, rng, budget, [kvdoc], held_out,
                                cap=None if frac < 1.0 else 10 ** 9)
    if len(kvdoc.body) != kvdoc.full_len:
        # Cut to fit: ask only for pairs still present (rare: only at tiny budgets).
        return gen_kv(corp, rng, T, held_out, canonical, nturn, _retry + 1)
    return finish(corp, T, ctx, turns), pairs[ask[0]]


def kvl_depth(rng):
    """Depth of the first pair asked in a training kvl row. loupe scores depths 0, 0.25, 0.5,
    0.75 and 1, and its misses sit at 0.75..1 (the pair close to the question), which gen_kv's
    uniform pick over pairs, with filler often after the table, rarely shows: so the table's end
    is drawn most, its very last line in 15% of rows."""
    u = rng.random()
    if u < 0.15:
        return 1.0
    if u < 0.20:
        return 0.0
    if u < 0.60:
        return float(rng.uniform(0.6, 1.0))
    return float(rng.random())


def kv_lines(corp, rng, n_tokens):
    """Distinct-key "{key}: {value}" lines (as token arrays) of at least n_tokens in all, and
    their pairs."""
    pairs, encs, seen, total = [], [], set(), 0
    while total < n_tokens:
        batch = []
        for _ in range(max(8, (n_tokens - total) // 9 + 8)):
            k = hexid(rng)
            if k not in seen:
                seen.add(k)
                batch.append((k, hexid(rng)))
        for e in corp.tok.encode_batch(["%s: %s\n" % p for p in batch]):
            encs.append(np.array(e, dtype=np.int32))
            total += len(e)
        pairs += batch
    return pairs, encs


def gen_kv_loupe(corp, rng, T, held_out, depth=None, nturn=None):
    """The kv case in loupe's layout (app/niah_cases.c build_once): one document
    data/{word}.txt of key/value lines filling the context, no <tree>, no other document, the
    first question canonical and about the line at `depth` of the context (the last line
    boundary at or before depth x context tokens, as loupe's boundary_at). With `depth` given
    (evaluation) the row is one turn and leaves loupe's answer room; training rows draw the
    depth, 1..8 turns (half of them one) and 0..63 unused tokens at the end.
    Returns (row, (key, value) asked first)."""
    evaluating = depth is not None
    if depth is None:
        depth = kvl_depth(rng)
    nturn = nturn or (1 if evaluating or rng.random() < 0.5 else int(rng.integers(2, 9)))
    extra_u = rng.random(nturn - 1)
    extra_alt = rng.random(nturn - 1) < 0.3
    # loupe's prompt is the length less ANSWER_ROOM (32) less its estimates' margin.
    slack = 40 if evaluating else int(rng.integers(0, 64))
    path = "data/%s.txt" % corp.words[int(rng.integers(len(corp.words)))]
    head = np.concatenate([corp.enc("<context>\n<sources>\n%s\n</sources>\n" % path),
                           corp.enc('<document path="%s">\n' % esc_attr(path))])
    fixed = len(user_prefix(corp)) + len(head) + len(corp.close_doc) + slack
    room = T + 1 - fixed - 40 * nturn
    pairs, encs = kv_lines(corp, rng, max(room, 64))
    cum = np.cumsum([len(e) for e in encs])
    m = max(2, int(np.searchsorted(cum, room, side="right")))
    for _ in range(8):
        ctx_len = len(head) + int(cum[m - 1]) + len(corp.close_doc)
        starts = len(head) + np.concatenate([[0], cum[:m - 1]])
        first = max(0, int(np.searchsorted(starts, depth * ctx_len, side="right")) - 1)
        asked = [first]
        for u in extra_u:
            j = min(m - 1, int(u * m))
            if j not in asked:
                asked.append(j)
        turns = []
        for n, a in enumerate(asked):
            q = KV_QS[1] if n > 0 and extra_alt[n - 1] else KV_QS[0]
            turns.append(turn_tokens(corp, n == 0, q.format(k=pairs[a][0]), pairs[a][1]))
        over = fixed + int(cum[m - 1]) + sum(len(t) for t, _ in turns) - (T + 1)
        if over <= 0 or m <= 2:
            break
        # The turns took more than their estimate: drop lines from the end, ask again.
        m = max(2, int(np.searchsorted(cum, cum[m - 1] - over, side="right")))
    ctx = np.concatenate([head] + encs[:m] + [corp.close_doc])
    return finish(corp, T, ctx, turns), pairs[first]


def gen_whichfile(corp, rng, T, held_out):
    budget = T + 1 - 10 - 160
    ctx, regions, docs = make_context(corp, rng, budget, [], held_out,
                                      pool=corp.py_pool[held_out],
                                      cap=int(rng.choice([1500, 4000, 8000])))
    owners = {}
    for d in docs:
        kept = len(d.body) if d.full_len == len(d.body) else len(d.body) - 20
        for off, nm in corp.names.get(d.src, []):
            if off < kept:
                owners.setdefault(nm, set()).add(d.path)
    uniq = sorted(nm for nm, ps in owners.items() if len(ps) == 1)
    if not uniq:
        return gen_lm(corp, rng, T, held_out)
    nturn = min(len(uniq), int(rng.integers(1, 5)))
    pick = rng.choice(len(uniq), size=nturn, replace=False)
    turns, room = [], T + 1 - len(user_prefix(corp)) - len(ctx)
    for j, pi in enumerate(pick):
        nm = uniq[pi]
        q = FILE_QS[0] if rng.random() < 0.7 else FILE_QS[1]
        t = turn_tokens(corp, j == 0, q.format(n=nm), next(iter(owners[nm])))
        if len(t[0]) > room:
            break
        room -= len(t[0])
        turns.append(t)
    if not turns:
        return gen_lm(corp, rng, T, held_out)
    return finish(corp, T, ctx, turns)


def gen_sample(corp, rng, T, held_out, task):
    if task == "lm":
        return gen_lm(corp, rng, T, held_out)
    if task == "passkey":
        return gen_passkey(corp, rng, T, held_out)[0]
    if task == "needles":
        return gen_needles(corp, rng, T, held_out)
    if task == "kv":
        return gen_kv(corp, rng, T, held_out)[0]
    if task == "kvl":
        return gen_kv_loupe(corp, rng, T, held_out)[0]
    return gen_whichfile(corp, rng, T, held_out)


def make_batch(corp, seed, step, T, rows, held_out=False, mix=TRAIN_MIX):
    """rows samples of length T for one step: (ids [rows, T+1] int32, ans [rows, T], lm [rows, T])."""
    rng = np.random.default_rng([seed, 1 if held_out else 0, step, T])
    tasks = rng.choice(len(TASKS), size=rows, p=np.array(mix) / sum(mix))
    ids, ans, lm = [], [], []
    for t in tasks:
        i, a, l_ = gen_sample(corp, rng, T, held_out, TASKS[t])
        ids.append(i)
        ans.append(a)
        lm.append(l_)
    return np.stack(ids), np.stack(ans), np.stack(lm)
