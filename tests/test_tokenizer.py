"""tokenizer.py: round trips, special tokens, digits as single tokens, optional merges."""
import base64

import pytest

from tokenizer import (ANSWER_CLOSE, ANSWER_OPEN, ASSISTANT, EOT, PAD, SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN, USER,
                       Tokenizer, get_tokenizer)


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def test_vocabulary_layout(tok):
    assert tok.vocab_size == 264
    assert list(tok.special_ids) == list(SPECIAL_TOKENS)
    assert sorted(tok.special_ids.values()) == list(range(256, 264))
    assert tok.eot_id == tok.special_ids["<|endoftext|>"] and tok.pad_id == tok.special_ids["<|pad|>"]
    assert tok.eot_id != tok.pad_id
    assert get_tokenizer() is tok  # cached


def test_special_tokens_have_fixed_spellings_and_ids(tok):
    """Checkpoints store token ids, and the corpus and rewards match these spellings: both are fixed."""
    assert tok.special_ids == {"<|endoftext|>": 256, "<|pad|>": 257, "<|user|>": 258, "<|assistant|>": 259,
                               "<think>": 260, "</think>": 261, "<answer>": 262, "</answer>": 263}
    assert SPECIAL_TOKENS == (EOT, PAD, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
    assert (tok.eot_id, tok.pad_id) == (256, 257)


@pytest.mark.parametrize("text", [
    "", "hello world", "What is 12 + 345?\n  indented\ttab", "héllo wörld, ça va? Ünïcödé",
    "日本語のテキスト", "emoji 🎉 family 👨‍👩‍👧 flag 🇫🇷", "\x00 control \x7f", "a" * 1000,
])
@pytest.mark.parametrize("allow_special", [False, True])
def test_round_trip(tok, text, allow_special):
    ids = tok.encode(text, allow_special=allow_special)
    assert tok.decode(ids) == text
    assert ids == list(text.encode("utf-8"))  # byte-level: one token per UTF-8 byte
    assert all(0 <= i < 256 for i in ids)


def test_digits_are_single_tokens(tok):
    ids = tok.encode("1234567890 + 98765")
    assert [tok.decode([i]) for i in ids] == list("1234567890 + 98765")


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_tokens_only_when_allowed(tok, special):
    text = f"a{special}b"
    plain = tok.encode(text)  # a user typing "<think>" gets bytes, not the special id, and no error
    assert plain == list(text.encode())
    assert tok.special_ids[special] not in plain
    special_ids = tok.encode(text, allow_special=True)
    assert special_ids == [ord("a"), tok.special_ids[special], ord("b")]
    assert tok.decode(special_ids) == text == tok.decode(plain)


def test_chat_template_encoding(tok):
    text = "<|user|>What is 2+3?<|assistant|><think>2+3=5</think><answer>5</answer><|endoftext|>"
    ids = tok.encode(text, allow_special=True)
    s = tok.special_ids
    assert ids[0] == s["<|user|>"] and ids[-1] == tok.eot_id
    assert [i for i in ids if i >= 256] == [s[k] for k in ("<|user|>", "<|assistant|>", "<think>", "</think>",
                                                          "<answer>", "</answer>", "<|endoftext|>")]
    assert tok.decode(ids) == text


def test_decode_of_a_cut_multibyte_character_does_not_raise(tok):
    ids = tok.encode("🎉")
    assert len(ids) == 4
    assert tok.decode(ids[:2]) == "\ufffd"  # half an emoji decodes to the replacement character


def write_merges(path, tokens):
    path.write_text("".join(f"{base64.b64encode(t).decode()} {256 + i}\n" for i, t in enumerate(tokens)))
    return str(path)


def test_optional_merges_keep_digits_single(tmp_path):
    tok = Tokenizer(write_merges(tmp_path / "merges.tiktoken", [b"he", b"ll", b"12"]))
    assert tok.vocab_size == 256 + 3 + len(SPECIAL_TOKENS)
    assert tok.eot_id == 259
    ids = tok.encode("hello 12")
    assert ids[:2] == [256, 257]
    assert ids[-2:] == [ord("1"), ord("2")]  # the pre-tokenizer splits digits, so "12" never merges
    assert tok.decode(ids) == "hello 12"
    assert tok.decode(tok.encode("<think>x", allow_special=True)) == "<think>x"


def test_bad_merges_file(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_text(f"{base64.b64encode(b'he').decode()} 300\n")
    with pytest.raises(ValueError, match="256"):
        Tokenizer(str(path))
