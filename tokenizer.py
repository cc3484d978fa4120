"""The tokenizer: 256 single bytes plus the chat / reasoning special tokens, built offline.

Why byte-level?
1. Digits stay single tokens. Every number is spelled digit by digit, so "1234 + 5678" is the
   same kind of sequence for every number and a small model can learn carrying column by column.
   BPE tokenizers that merge "123" into one token make arithmetic much harder for small models.
2. Nothing to download or train: the 256 ranks are written down below, so `get_tokenizer()` works
   offline, in tests and on a fresh CI machine (`tiktoken.get_encoding` would download its ranks).
3. Any UTF-8 string round-trips (non-ASCII text and emoji are just several bytes each).
The cost is longer sequences (one token per byte), which is fine for our short synthetic tasks.

Extension point: `get_tokenizer(merges_file)` adds BPE merges from a file in tiktoken's format
(one "<base64 token> <rank>" per line, ranks 256, 257, ... after the 256 bytes), e.g. one under
`data/`. The pre-tokenizer pattern splits every digit into its own piece, so no merge can ever join
digits. No command passes a merges file: byte-level (no file) is the default and what every script
uses; the merges are kept for the BPE tokenizer of issue 23.

Special tokens (ids right after the mergeable ranks, so 256..263 for the byte-level tokenizer) are
the constants EOT, PAD, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE below.
This is their one home: tasks.py, rewards.py and corpus.py import them, none spells them again.

Usage:
    tok = get_tokenizer()
    ids = tok.encode("<|user|>What is 2+3?<|assistant|>", allow_special=True)
    text = tok.decode(ids)
"""
import base64
import functools

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


def load_merges(path: str) -> dict[bytes, int]:
    """Read extra BPE tokens in tiktoken's file format: one `<base64 bytes> <rank>` per line."""
    ranks = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


class Tokenizer:
    """A tiktoken Encoding with our special tokens, and the few helpers the scripts use.
    merges_file: extra BPE merges (the module docstring), an extension point for issue 23's BPE
    tokenizer; every command uses the byte-level tokenizer (None)."""

    def __init__(self, merges_file: str | None = None):
        ranks = byte_ranks()
        if merges_file is not None:
            extra = load_merges(merges_file)
            expected = set(range(256, 256 + len(extra)))
            if set(extra.values()) != expected:
                raise ValueError(f"{merges_file}: merge ranks must be exactly 256..{255 + len(extra)}")
            ranks.update(extra)
        n = len(ranks)
        self.special_ids: dict[str, int] = {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}
        self.enc = tiktoken.Encoding(name="r1-bytes" if merges_file is None else "r1-bpe",
                                     pat_str=PAT_STR, mergeable_ranks=ranks,
                                     special_tokens=self.special_ids)
        self.vocab_size: int = n + len(SPECIAL_TOKENS)  # 264 for the byte-level tokenizer
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
        return self.enc.decode([int(i) for i in ids])

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, special={self.special_ids})"


@functools.lru_cache(maxsize=None)
def get_tokenizer(merges_file: str | None = None) -> Tokenizer:
    """The project's tokenizer (cached). Byte-level unless a merges file is given (no command gives
    one: an extension point for issue 23)."""
    return Tokenizer(merges_file)
