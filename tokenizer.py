"""The tokenizer: 256 single bytes, 256 BPE merges learned from the synthetic web, and the chat /
reasoning special tokens; built offline.

1. Digits stay single tokens. The pre-tokenizer (PAT_STR) cuts every digit into its own piece
   before any merge, so "1234 + 5678" is spelled digit by digit for every number and a small model
   can learn carrying column by column (BPE that merges "123" into one token makes arithmetic much
   harder for small models).
2. Words and the web's fixed phrases are merged: 256 merges learned from the three synthetic webs
   (`python tokenizer.py` learns them and writes data/merges.tiktoken, the committed file every
   command loads), so " no" or "<answer>"'s neighbours are one token. Every sequence (pretraining,
   rollouts, log-probs) is 1.5-1.6x shorter than byte-level (3.1x in the code web), and the same small model learns its
   traces in fewer steps (docs/LOG.md, issue 23).
3. Nothing to download: the ranks are the 256 bytes plus the file's merges, so `get_tokenizer()`
   works offline, in tests and on a fresh CI machine (`tiktoken.get_encoding` would download).
4. Any UTF-8 string round-trips (text the merges never saw is spelled in bytes).

`HFTokenizer(dir)` reads a Hugging Face byte-level BPE tokenizer.json (GPT-2, Llama 3, Qwen2,
SmolLM2) into the same interface, token for token as the `tokenizers` library encodes (issue 25:
real small models; tests/make_hf_reference.py made the references). The tokenizer travels with the
model: loading a real model puts its tokenizer in use (`use_tokenizer`), and `get_tokenizer()`
returns it from then on in that process.

`get_tokenizer(None)` is the byte-level tokenizer (tests and the notebooks' illustrations use it
where one token per character makes a point). Every checkpoint records its tokenizer's `name`
(merges file hash included), and loading one made with another tokenizer is refused.

Special tokens (ids right after the mergeable ranks: 512..519 with 256 merges, 256..263 byte-level)
are the constants EOT, PAD, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE below.
This is their one home: tasks.py, rewards.py and corpus.py import them, none spells them again.

Usage:
    tok = get_tokenizer()
    ids = tok.encode("<|user|>What is 2+3?<|assistant|>", allow_special=True)
    text = tok.decode(ids)
    python tokenizer.py                # re-learn data/merges.tiktoken (after changing corpus.py)
"""
import argparse
import base64
import collections
import functools
import hashlib
import json
import os
import unicodedata

import regex
import tiktoken

EOT = "<|endoftext|>"                                # end of a document / of a completion (eot_id)
PAD = "<|pad|>"                                      # padding (pad_id); never trained on
USER = "<|user|>"                                    # starts the user's turn of the prompt template
ASSISTANT = "<|assistant|>"                          # starts the assistant's turn; the completion follows
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"      # R1's reasoning tags (R1 paper, Table 1 template)
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"  # R1's answer tags
# In id order: the ids are part of every checkpoint, so append new tokens, never reorder.
SPECIAL_TOKENS = (EOT, PAD, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# Pre-tokenizer (splits text before merges; irrelevant when there are no merges). GPT-4's pattern,
# except that numbers are split into single digits (\p{N} rather than \p{N}{1,3}).
PAT_STR = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}"""
           r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")


def byte_ranks() -> dict[bytes, int]:
    """The 256 single bytes, rank = byte value."""
    return {bytes([i]): i for i in range(256)}


MERGES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "merges.tiktoken")


def load_merges(path: str) -> dict[bytes, int]:
    """Read extra BPE tokens in tiktoken's file format: one `<base64 bytes> <rank>` per line, ranks
    256, 257, ... A missing or malformed file is a one-line ValueError naming it."""
    if not os.path.exists(path):
        raise ValueError(f"{path}: merges file not found (run `python tokenizer.py` to learn it, or "
                         f"`git checkout data/merges.tiktoken`)")
    ranks = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise ValueError(f"{path}, line {n}: not '<base64 token> <rank>' ({e}); the file is corrupt: "
                                 f"`git checkout data/merges.tiktoken` or `python tokenizer.py`") from None
    if set(ranks.values()) != set(range(256, 256 + len(ranks))) or len(ranks) == 0:
        raise ValueError(f"{path}: merge ranks must be exactly 256..{255 + len(ranks)}, each token once")
    if any(len(token) < 2 for token in ranks):
        raise ValueError(f"{path}: a merge must be at least two bytes long")
    return ranks


class Tokenizer:
    """A tiktoken Encoding with our special tokens, and the few helpers the scripts use.
    merges_file: BPE merges on top of the 256 bytes (data/merges.tiktoken by default); None =
    byte-level. `name` identifies it in checkpoints ("bytes" or "bpe<n>-<hash of the file>")."""

    template = "chat"  # tasks.format_prompt: the short <|user|>question<|assistant|> form the web teaches

    def __init__(self, merges_file: str | None = MERGES_FILE):
        ranks = byte_ranks()
        self.name = "bytes"
        if merges_file is not None:
            extra = load_merges(merges_file)
            ranks.update(extra)
            with open(merges_file, "rb") as f:
                self.name = f"bpe{len(extra)}-{hashlib.sha256(f.read()).hexdigest()[:12]}"
        n = len(ranks)
        self.special_ids: dict[str, int] = {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}
        self.enc = tiktoken.Encoding(name=f"r1-{self.name}",
                                     pat_str=PAT_STR, mergeable_ranks=ranks,
                                     special_tokens=self.special_ids)
        self.vocab_size: int = n + len(SPECIAL_TOKENS)  # 520 with 256 merges, 264 byte-level
        self.eot_id: int = self.special_ids[EOT]
        self.pad_id: int = self.special_ids[PAD]

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> token ids. With allow_special=False, special-token text such as a literal
        "<think>" typed by a user is encoded as plain bytes (never as the special id, never an error)."""
        if allow_special:
            return self.enc.encode(text, allowed_special="all")
        return self.enc.encode(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids) -> str:
        """Token ids -> text. Bytes that are not valid UTF-8 (e.g. a cut-off emoji) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids) -> bytes:
        """Token ids -> the bytes they spell. An id past the vocabulary spells nothing: a real model's
        embedding table is often padded beyond its tokenizer (Qwen2.5: 151,936 rows, 151,665 tokens),
        and sampling may pick such a row."""
        return self.enc.decode_bytes([int(i) for i in ids if int(i) < self.vocab_size])

    def __repr__(self) -> str:
        return f"Tokenizer({self.name}, vocab_size={self.vocab_size}, special={self.special_ids})"


@functools.lru_cache(maxsize=None)
def project_tokenizer(merges_file: str | None = MERGES_FILE) -> Tokenizer:
    """The project's tokenizer (cached): the committed BPE merges, or byte-level with None."""
    return Tokenizer(merges_file)


_in_use: Tokenizer | None = None  # the process's tokenizer when it is not the project's (use_tokenizer)
_settled = False                  # a model was loaded with the tokenizer in use: it can no longer change


def use_tokenizer(tok: Tokenizer | None) -> None:
    """Make `tok` the tokenizer get_tokenizer() returns in this process, settled (None: the
    project's again, unsettled). The tokenizer travels with the model: loading a real model
    (common.load_checkpoint("hf:DIR")), or a checkpoint trained from one, calls this with its
    HFTokenizer, so every script's encode, decode, stop tokens and prompt template follow. One
    process, one tokenizer: once a model is loaded (settle_tokenizer), another is refused."""
    global _in_use, _settled
    _in_use, _settled = tok, tok is not None


def settle_tokenizer() -> None:
    """A model was loaded with the tokenizer in use (common.check_tokenizer): keep it."""
    global _settled
    _settled = True


def tokenizer_settled() -> bool:
    return _settled


def get_tokenizer(merges_file: str | None = MERGES_FILE) -> Tokenizer:
    """The tokenizer in use: the project's (the committed merges; byte-level with None) unless a
    real model's was put in use (use_tokenizer)."""
    if _in_use is not None and merges_file == MERGES_FILE:
        return _in_use
    return project_tokenizer(merges_file)


# ----------------------------------------------------------------------------- a Hugging Face tokenizer.json

# The byte-level pre-tokenizer's own pattern (GPT-2's), used when tokenizer.json's ByteLevel splits
# the text itself (use_regex true); Qwen2 and Llama 3 put their pattern in a Split step instead.
GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the printable character byte-level BPE writes in
    tokenizer.json for each byte -> that byte (printable bytes stand for themselves, the others are
    shifted to U+0100 and up)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


# the end-of-text tokens of byte-level BPE base models (GPT-2/Qwen2/SmolLM2, Llama 3, others), and
# the end-of-turn tokens that mark an instruct model's eos_token (ChatML, Llama 3, Phi-3, Gemma)
END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>")
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


class HFTokenizer(Tokenizer):
    """A Hugging Face byte-level BPE tokenizer (tokenizer.json: GPT-2, Llama 3, Qwen2, SmolLM2) as a
    tiktoken Encoding: the vocabulary's ids are the ranks, the pre-tokenizer's split pattern is
    pat_str, the added tokens are special tokens, and an NFC normalizer is applied before encoding.
    A first Digits step (SmolLM2, StarCoder2) cuts the digits off before the Encoding sees the text.
    encode never adds a BOS token (the R1-Zero template is the whole prompt). Anything else
    (another model type, a normalizer other than NFC, add_prefix_space) is a ValueError naming
    the file and what is unsupported.

    Base models only: a tokenizer_config.json whose eos_token ends a chat turn (`<|im_end|>`,
    `<|eot_id|>`: what instruct models stop at) is refused, because an instruct model expects its
    chat template, not R1-Zero's text template (a base model such as Qwen2.5-0.5B also ships a
    chat_template, so that field alone says nothing). Its eos_token is the end-of-text id."""

    template = "text"  # tasks.format_prompt: R1-Zero's plain-text template, the start of <think> pre-filled

    def __init__(self, path: str):  # builds its own Encoding: Tokenizer.__init__ (the project's) is not called
        where = path if path.endswith(".json") else os.path.join(path, "tokenizer.json")
        if not os.path.exists(where):
            raise ValueError(f"{where}: missing (a Hugging Face tokenizer directory holds tokenizer.json)")
        with open(where, "rb") as f:
            raw = f.read()
        spec = json.loads(raw)
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{where}: tokenizer model {model.get('type')!r} is not supported (only byte-level BPE)")
        pat_str, byte_level, self.digits = None, False, None
        pre = spec.get("pre_tokenizer") or {}
        for i, step in enumerate(pre.get("pretokenizers", [pre])):
            if step.get("type") == "Digits" and i == 0:  # SmolLM2's: digits cut off before the split pattern
                self.digits = regex.compile(r"(\p{N})" if step.get("individual_digits") else r"(\p{N}+)")
            elif step.get("type") == "Split" and "Regex" in step.get("pattern", {}) and pat_str is None:
                pat_str = step["pattern"]["Regex"]
            elif step.get("type") == "ByteLevel":
                byte_level = True
                if step.get("add_prefix_space"):
                    raise ValueError(f"{where}: ByteLevel add_prefix_space is not supported")
                if step.get("use_regex", True):
                    pat_str = pat_str or GPT2_PAT_STR
            elif step:
                raise ValueError(f"{where}: pre-tokenizer step {step.get('type')!r} is not supported")
        if not byte_level or pat_str is None:
            raise ValueError(f"{where}: not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer with a split pattern)")
        norm = (spec.get("normalizer") or {}).get("type")
        if norm not in (None, "NFC"):
            raise ValueError(f"{where}: normalizer {norm!r} is not supported (only none or NFC)")
        self.nfc = norm == "NFC"
        added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        alphabet = byte_level_alphabet()
        ranks = {}
        for token, rank in model["vocab"].items():
            if token in added:
                continue
            try:
                ranks[bytes(alphabet[c] for c in token)] = rank
            except KeyError:
                raise ValueError(f"{where}: vocabulary entry {token!r} is not byte-level text") from None
        self.name = f"hf-{hashlib.sha256(raw).hexdigest()[:12]}"
        self.special_ids = added
        self.enc = tiktoken.Encoding(name=self.name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=added)
        self.vocab_size = max([*ranks.values(), *added.values()]) + 1
        self.files = {"tokenizer.json": raw}  # what save() writes next to a checkpoint
        eos = None
        config_path = os.path.join(os.path.dirname(where), "tokenizer_config.json")
        if os.path.exists(config_path):
            with open(config_path, "rb") as f:
                self.files["tokenizer_config.json"] = f.read()
            try:
                eos = json.loads(self.files["tokenizer_config.json"]).get("eos_token")
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_path}: not JSON ({e.msg})") from None
            eos = eos.get("content") if isinstance(eos, dict) else eos
            if eos in END_OF_TURN:
                raise ValueError(f"{config_path}: eos_token {eos!r} ends a chat turn: an instruct model, which "
                                 f"expects its chat template; only base models (R1-Zero's text template) are supported")
        eos = eos if eos in added else next((t for t in END_OF_TEXT if t in added), None)
        if eos is None:
            raise ValueError(f"{where}: no end-of-text token among the added tokens (looked for "
                             f"{', '.join(END_OF_TEXT)}, and tokenizer_config.json's eos_token)")
        self.eot_id = added[eos]
        self.pad_id = added.get("<|pad|>", added.get("<|finetune_right_pad_id|>", self.eot_id))

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        text = unicodedata.normalize("NFC", text) if self.nfc else text
        if self.digits is None:
            return super().encode(text, allow_special)
        # a Digits step first: added tokens are matched before any pre-tokenizer, then the digits are
        # cut off, then each piece goes through the Encoding (its split pattern and merges) alone
        specials = sorted(self.special_ids, key=len, reverse=True) if allow_special else []
        parts = regex.split("(" + "|".join(map(regex.escape, specials)) + ")", text) if specials else [text]
        ids = []
        for part in parts:
            if part in specials:
                ids.append(self.special_ids[part])
                continue
            for piece in self.digits.split(part):
                ids += self.enc.encode_ordinary(piece) if piece else []
        return ids

    def save(self, out_dir: str) -> None:
        """Write the files it was read from into out_dir (a checkpoint's or an export's directory), so
        what was trained from a real model opens with its tokenizer anywhere."""
        os.makedirs(out_dir, exist_ok=True)
        for name, raw in self.files.items():
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(raw)


# ----------------------------------------------------------------------------- learning the merges


def learn_merges(texts, n_merges: int) -> list[bytes]:
    """Byte-pair encoding, the textbook way (Sennrich et al. 2016): split each text at its special
    tokens and by PAT_STR into pieces, count each distinct piece once per occurrence, then n_merges
    times merge the most frequent adjacent pair of tokens (ties: the smaller pair of byte strings,
    so the result is deterministic). Returns the merged tokens in the order learned (rank 256, 257,
    ...). No piece ever holds two digits (PAT_STR), so no merge can join digits."""
    pattern = regex.compile(PAT_STR)
    specials = regex.compile("|".join(regex.escape(s) for s in SPECIAL_TOKENS))
    counts = collections.Counter(piece for text in texts for part in specials.split(text)
                                 for piece in pattern.findall(part))
    words = {tuple(bytes([b]) for b in piece.encode()): c for piece, c in counts.items()}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, c in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += c
        if not pairs:
            break  # every piece is a single token already
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = best[0] + best[1]
        merges.append(merged)
        new_words = {}
        for word, c in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return merges


def write_merges(merges: list[bytes], path: str) -> None:
    """Write tokens in tiktoken's file format, ranks from 256."""
    with open(path, "w") as f:
        for rank, token in enumerate(merges, 256):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")


def web_documents(task_name: str, n: int, seed: int) -> list[str]:
    """n documents of one synthetic web (corpus.py, its default mix)."""
    import random
    from corpus import CorpusConfig, sample_document  # corpus imports this module's constants
    from tasks import get_task
    rng, task = random.Random(seed), get_task(task_name)
    return [sample_document(task, CorpusConfig(), rng)[1] for _ in range(n)]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Learn the BPE merges from the synthetic webs (corpus.py) and "
                                     "write them in tiktoken's format; print bytes per token on other documents.")
    parser.add_argument("--merges", type=int, default=256, help="how many merges to learn (default 256)")
    parser.add_argument("--docs", type=int, default=2000, help="documents per web (pairsum, add, code) to learn "
                        "from (default 2000); the saving is measured on 1000 others per web")
    parser.add_argument("--out", default=MERGES_FILE, help="where to write them (default data/merges.tiktoken)")
    args = parser.parse_args(argv)
    if args.merges < 1 or args.docs < 1:
        parser.error("--merges and --docs must be at least 1")
    from corpus import WEB_TASKS
    texts = [t for name in WEB_TASKS for t in web_documents(name, args.docs, seed=0)]
    merges = learn_merges(texts, args.merges)
    write_merges(merges, args.out)
    print(f"{len(merges)} merges written to {args.out}; vocabulary {256 + len(merges) + len(SPECIAL_TOKENS)}")
    tok, byte_tok = Tokenizer(args.out), Tokenizer(None)
    for name in WEB_TASKS:
        held_out = web_documents(name, 1000, seed=1)
        n_bytes = sum(len(byte_tok.encode(t, allow_special=True)) for t in held_out)
        n_tokens = sum(len(tok.encode(t, allow_special=True)) for t in held_out)
        print(f"  {name:8s} web: {n_bytes / n_tokens:.2f}x fewer tokens than byte-level on 1000 other documents")
    print("the first merges:", ", ".join(repr(m.decode(errors="replace")) for m in merges[:16]))


if __name__ == "__main__":
    main()
