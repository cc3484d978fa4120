"""tokenizer.py: round trips, special tokens, digits as single tokens, the committed BPE merges
(learned as the textbook algorithm says, not stale), bad merges files."""
import base64
import json
import os
import shutil
import unicodedata

import pytest

import tokenizer
from tokenizer import (ANSWER_CLOSE, ANSWER_OPEN, ASSISTANT, EOT, MERGES_FILE, PAD, SPECIAL_TOKENS, THINK_CLOSE,
                       THINK_OPEN, USER, Tokenizer, get_tokenizer, learn_merges, load_merges)

TEXTS = ["", "hello world", "What is 12 + 345?\n  indented\ttab", "héllo wörld, ça va? Ünïcödé",
         "日本語のテキスト", "emoji 🎉 family 👨‍👩‍👧 flag 🇫🇷", "\x00 control \x7f", "a" * 1000,
         "Which two of 7 1 3 5 4 6 add up to 8? 5+1=6 vs 8, no. I give up.",
         "¿Qué dos de 7 1 3 suman 8? 5+1=6 contra 8, no. me rindo.", "n = int(input())\nprint(3 * n + 1)"]


@pytest.fixture(scope="module", params=["bpe", "bytes"])
def tok(request):
    return get_tokenizer() if request.param == "bpe" else get_tokenizer(None)


def test_vocabulary_layout(tok):
    n = len(tok.enc._mergeable_ranks)
    assert tok.vocab_size == n + len(SPECIAL_TOKENS)
    assert list(tok.special_ids) == list(SPECIAL_TOKENS)
    assert sorted(tok.special_ids.values()) == list(range(n, n + len(SPECIAL_TOKENS)))
    assert tok.eot_id == tok.special_ids["<|endoftext|>"] and tok.pad_id == tok.special_ids["<|pad|>"]
    assert tok.eot_id != tok.pad_id
    assert get_tokenizer() is get_tokenizer() and get_tokenizer(None) is get_tokenizer(None)  # cached


def test_the_default_is_the_committed_bpe():
    tok = get_tokenizer()
    assert tok.vocab_size == 520 and tok.name.startswith("bpe256-")
    assert get_tokenizer(None).vocab_size == 264 and get_tokenizer(None).name == "bytes"


def test_special_tokens_have_fixed_spellings_and_ids():
    """Checkpoints store token ids, and the corpus and rewards match these spellings: both are fixed."""
    names = ("<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<think>", "</think>", "<answer>", "</answer>")
    assert get_tokenizer().special_ids == {s: 512 + i for i, s in enumerate(names)}
    assert get_tokenizer(None).special_ids == {s: 256 + i for i, s in enumerate(names)}
    assert SPECIAL_TOKENS == (EOT, PAD, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("allow_special", [False, True])
def test_round_trip(tok, text, allow_special):
    ids = tok.encode(text, allow_special=allow_special)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size - len(SPECIAL_TOKENS) for i in ids)
    if tok.name == "bytes":
        assert ids == list(text.encode("utf-8"))  # byte-level: one token per UTF-8 byte
    else:
        assert len(ids) <= len(text.encode("utf-8"))


def test_bpe_shortens_the_webs_text():
    text = TEXTS[8]
    assert len(get_tokenizer().encode(text)) < 0.8 * len(get_tokenizer(None).encode(text))


def test_digits_are_single_tokens(tok):
    text = "1234567890 + 98765 = x12y 3.14"
    ids = tok.encode(text)
    pieces = [tok.decode([i]) for i in ids]
    assert "".join(pieces) == text
    for p in pieces:  # a token holding a digit is that digit alone
        assert not any(c.isdigit() for c in p) or len(p) == 1


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_tokens_only_when_allowed(tok, special):
    text = f"a{special}b"
    plain = tok.encode(text)  # a user typing "<think>" gets ordinary tokens, not the special id, and no error
    assert tok.special_ids[special] not in plain
    special_ids = tok.encode(text, allow_special=True)
    assert special_ids == tok.encode("a") + [tok.special_ids[special]] + tok.encode("b")
    assert tok.decode(special_ids) == text == tok.decode(plain)


def test_chat_template_encoding(tok):
    text = "<|user|>What is 2+3?<|assistant|><think>2+3=5</think><answer>5</answer><|endoftext|>"
    ids = tok.encode(text, allow_special=True)
    s = tok.special_ids
    assert ids[0] == s["<|user|>"] and ids[-1] == tok.eot_id
    assert [i for i in ids if i in s.values()] == [s[k] for k in ("<|user|>", "<|assistant|>", "<think>", "</think>",
                                                                  "<answer>", "</answer>", "<|endoftext|>")]
    assert tok.decode(ids) == text


def test_decode_of_a_cut_multibyte_character_does_not_raise():
    tok = get_tokenizer(None)
    ids = tok.encode("🎉")
    assert len(ids) == 4
    assert tok.decode(ids[:2]) == "\ufffd"  # half an emoji decodes to the replacement character


# ----------------------------------------------------------------------------- the merges


def pieces_of(texts):
    import regex
    specials = "|".join(map(regex.escape, SPECIAL_TOKENS))
    return [p for t in texts for part in regex.split(specials, t) for p in regex.findall(tokenizer.PAT_STR, part)]


def apply_pairs(piece: str, pairs) -> list[bytes]:
    """A piece's tokens after applying the learned merges (pairs) one by one, in order."""
    toks = [bytes([b]) for b in piece.encode()]
    for pair in pairs:
        i, out = 0, []
        while i < len(toks):
            if tuple(toks[i:i + 2]) == pair:
                out.append(pair[0] + pair[1])
                i += 2
            else:
                out.append(toks[i])
                i += 1
        toks = out
    return toks


def slow_learn(texts, n):
    """Reference BPE: every round, re-tokenize every occurrence of every piece from its bytes and
    count all adjacent pairs from scratch. Returns the merged pairs."""
    pairs = []
    for _ in range(n):
        counts = {}
        for piece in pieces_of(texts):
            toks = apply_pairs(piece, pairs)
            for pair in zip(toks, toks[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        pairs.append(min(counts, key=lambda pr: (-counts[pr], pr)))
    return pairs


def test_learn_merges_matches_the_slow_reference():
    texts = ["the then there no no no. nope, <think>no</think> 12 yes yes", "yes: 5+1=6 vs 8, no. Yes!"]
    assert learn_merges(texts, 12) == [a + b for a, b in slow_learn(texts, 12)]
    assert all(not any(chr(c).isdigit() for c in m) for m in learn_merges(texts, 40))


def test_tiktoken_applies_the_learned_merges_as_learned():
    """tiktoken merges by rank; on the texts it learned from, that equals applying the merges in order."""
    import tiktoken
    texts = tokenizer.web_documents("pairsum", 30, seed=5)
    pairs = slow_learn(texts, 40)
    ranks = {**tokenizer.byte_ranks(), **{a + b: 256 + i for i, (a, b) in enumerate(pairs)}}
    enc = tiktoken.Encoding("t", pat_str=tokenizer.PAT_STR, mergeable_ranks=ranks, special_tokens={})
    for piece in pieces_of(texts):
        assert [ranks[t] for t in apply_pairs(piece, pairs)] == enc.encode_ordinary(piece)


def test_committed_merges_are_what_tokenizer_py_learns(tmp_path):
    """data/merges.tiktoken is not stale: `python tokenizer.py` from today's corpus writes the same file."""
    out = tmp_path / "m.tiktoken"
    tokenizer.main(["--out", str(out)])
    assert out.read_text() == open(MERGES_FILE).read(), "corpus.py changed: run `python tokenizer.py`"


def write_merges(path, tokens):
    path.write_text("".join(f"{base64.b64encode(t).decode()} {256 + i}\n" for i, t in enumerate(tokens)))
    return str(path)


def test_merges_file_keeps_digits_single(tmp_path):
    tok = Tokenizer(write_merges(tmp_path / "merges.tiktoken", [b"he", b"ll", b"12"]))
    assert tok.vocab_size == 256 + 3 + len(SPECIAL_TOKENS)
    assert tok.eot_id == 259
    ids = tok.encode("hello 12")
    assert ids[:2] == [256, 257]
    assert ids[-2:] == [ord("1"), ord("2")]  # the pre-tokenizer splits digits, so "12" never merges
    assert tok.decode(ids) == "hello 12"
    assert tok.decode(tok.encode("<think>x", allow_special=True)) == "<think>x"


@pytest.mark.parametrize("content, match", [
    (f"{base64.b64encode(b'he').decode()} 300\n", "256"),                       # ranks with a gap
    ("not-base64!! 256\n", "line 1"),                                           # corrupt
    (f"{base64.b64encode(b'he').decode()}\n", "line 1"),                        # a rank missing
    (f"{base64.b64encode(b'h').decode()} 256\n", "two bytes"),                  # a merge of one byte
    ("", "256"),                                                                # empty
])
def test_bad_merges_file_is_one_line_naming_it(tmp_path, content, match):
    path = tmp_path / "bad.tiktoken"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        load_merges(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_merges_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="not found.*python tokenizer.py"):
        Tokenizer(str(tmp_path / "nope.tiktoken"))


def test_cli_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit):
        tokenizer.main(["--merges", "0"])
    assert "at least 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Hugging Face tokenizer.json

HF_REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_reference")


@pytest.mark.parametrize("kind", ["qwen2", "gpt2", "digits"])
def test_hf_tokenizer_gives_the_reference_libraries_token_ids(kind):
    """Byte-level BPE tokenizers trained by the `tokenizers` library (tests/make_hf_reference.py):
    Qwen2's layout (NFC, a Split pattern, then ByteLevel), GPT-2's (ByteLevel splits) and SmolLM2's
    (single digits cut off first, then GPT-2's ByteLevel split). On text
    with numbers, whitespace runs, non-ASCII and special tokens our tiktoken Encoding gives exactly
    the library's ids, and decodes them back to the (normalised) text."""
    with open(os.path.join(HF_REFERENCE, "reference.json")) as f:
        ref = json.load(f)[f"tokenizer-{kind}"]
    tok = tokenizer.HFTokenizer(os.path.join(HF_REFERENCE, f"tokenizer-{kind}"))
    for text, ids in zip(ref["texts"], ref["ids"]):
        assert tok.encode(text, allow_special=True) == ids, text
        expected = unicodedata.normalize("NFC", text) if kind == "qwen2" else text
        assert tok.decode(ids) == expected
    assert tok.eot_id == tok.special_ids["<|endoftext|>"] and tok.name.startswith("hf-")
    assert tok.encode("<|endoftext|>") != [tok.eot_id]   # typed text never becomes the special token


def _edit(path, **changes):
    spec = json.loads(path.read_text())
    for dotted, value in changes.items():
        node, *keys = dotted.split("__")
        target = spec
        for k in [node, *keys][:-1]:
            target = target[k]
        target[[node, *keys][-1]] = value
    path.write_text(json.dumps(spec))


@pytest.mark.parametrize("change, message", [
    ({"model__type": "WordPiece"}, "tokenizer model 'WordPiece' is not supported"),
    ({"normalizer": {"type": "Lowercase"}}, "normalizer 'Lowercase' is not supported"),
    ({"pre_tokenizer": {"type": "Whitespace"}}, "pre-tokenizer step 'Whitespace' is not supported"),
    ({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}}, "add_prefix_space is not supported"),
])
def test_unsupported_hf_tokenizers_are_one_line_errors_naming_the_file(tmp_path, change, message):
    shutil.copy(os.path.join(HF_REFERENCE, "tokenizer-gpt2", "tokenizer.json"), tmp_path / "tokenizer.json")
    _edit(tmp_path / "tokenizer.json", **change)
    with pytest.raises(ValueError, match=message) as info:
        tokenizer.HFTokenizer(str(tmp_path))
    assert str(info.value).startswith(str(tmp_path / "tokenizer.json")) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="tokenizer.json: missing"):
        tokenizer.HFTokenizer(str(tmp_path / "nowhere"))
