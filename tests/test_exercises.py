"""The graded exercises (exercises.py): every one is gradeable and every common mistake fails it.

Each check runs on a private copy of the project, never on this working tree. Blanked (the stub
`start` writes), every test bound to an exercise fails; reset, the file is the original byte for
byte (the suite's own run of those tests shows they pass on it). The mistakes below are the
plausible wrong implementations docs/COURSE.md warns about: each must fail the grader.
"""
import concurrent.futures
import json
import os
import shutil
import subprocess
import textwrap

import pytest

import exercises
from conftest import ROOT

# exercise -> {mistake: the region's body as a student might write it (dedented; indented on use)}
MISTAKES = {
    "rmsnorm": {
        "LayerNorm's mean subtraction": """
            x32 = x.float() - x.float().mean(-1, keepdim=True)
            return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight""",
        "eps outside the square root": """
            x32 = x.float()
            return (x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)).type_as(x) * self.weight""",
        "no learned gain": """
            x32 = x.float()
            return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)""",
    },
    "rotary": {
        "frequencies interleaved, not in halves": """
            inv_freq = theta ** (-torch.arange(0, head_dim, 2).float() / head_dim)
            angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq).repeat_interleave(2, dim=-1)
            return angles.cos(), angles.sin()""",
        "exponent -i/D instead of -2i/D": """
            inv_freq = theta ** (-torch.arange(0, head_dim // 2).float() / head_dim)
            angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq)
            angles = torch.cat([angles, angles], dim=-1)
            return angles.cos(), angles.sin()""",
    },
    "attention": {
        "no 1/sqrt(D) scaling": """
            if kv_cache is not None:
                k, v = kv_cache.update(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                               enable_gqa=True, scale=1.0)""",
        "no causal mask": """
            if kv_cache is not None:
                k, v = kv_cache.update(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)""",
        "kv heads tiled (h % K) instead of grouped (h // (H/K))": """
            if kv_cache is not None:
                k, v = kv_cache.update(layer, k, v)
            k, v = k.repeat(1, H // K, 1, 1), v.repeat(1, H // K, 1, 1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1)""",
    },
    "kv_cache": {
        "returns only the new keys and values": """
            end = self.pos + k.size(2)
            self.k[layer, :, :, self.pos:end] = k
            self.v[layer, :, :, self.pos:end] = v
            return k, v""",
        "advances pos in every layer": """
            end = self.pos + k.size(2)
            self.k[layer, :, :, self.pos:end] = k
            self.v[layer, :, :, self.pos:end] = v
            self.pos = end
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end]""",
    },
    "top_p": {
        "drops the token that crosses p": """
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = sorted_logits.softmax(dim=-1)
            sorted_logits = sorted_logits.masked_fill(probs.cumsum(dim=-1) > top_p, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)""",
        "forgets to undo the sort": """
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = sorted_logits.softmax(dim=-1)
            logits = sorted_logits.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))""",
    },
    "token_logprobs": {
        "scores the input token, not the next one": """
            logits = model(tokens[:, :-1]).float() / temperature
            logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, :-1, None]).squeeze(-1)
            if not entropy:
                return logp
            probs = torch.softmax(logits.detach(), dim=-1)
            return logp, -(probs * probs.log()).sum(-1)""",
        "ignores the temperature": """
            logits = model(tokens[:, :-1]).float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
            if not entropy:
                return logp
            probs = torch.softmax(logits.detach(), dim=-1)
            return logp, -(probs * probs.log()).sum(-1)""",
    },
    "completion_mask": {
        "mask one position late (at the token, not before it)": """
            T = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
            tokens = torch.full((len(prompt_ids), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(prompt_ids), T - 1))
            for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
                tokens[i, :len(p) + len(c)] = torch.tensor(p + c)
                mask[i, len(p):len(p) + len(c)] = 1.0
            return tokens, mask""",
        "trains on the prompt too": """
            T = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
            tokens = torch.full((len(prompt_ids), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(prompt_ids), T - 1))
            for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
                tokens[i, :len(p) + len(c)] = torch.tensor(p + c)
                mask[i, :len(p) - 1 + len(c)] = 1.0
            return tokens, mask""",
    },
    "format_reward": {
        "only checks that the tags appear": """
            text = prefill + completion
            return 1.0 if all(t in text for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)) else 0.0""",
        "ignores the prefill": """
            text = completion
            for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
                if text.count(tag) != 1:
                    return 0.0
            m = _FORMAT_RE.fullmatch(text)
            return 1.0 if m and m.group(1).strip() and m.group(2).strip() else 0.0""",
    },
    "extract_answer": {
        "the first block, not the last": """
            start = completion.find(ANSWER_OPEN)
            end = completion.find(ANSWER_CLOSE, start)
            if start < 0 or end < 0:
                return None
            return completion[start + len(ANSWER_OPEN):end].strip()""",
        "does not strip": """
            last_close = completion.rfind(ANSWER_CLOSE)
            start = completion.rfind(ANSWER_OPEN, 0, max(last_close, 0))
            if last_close < 0 or start < 0:
                return None
            return completion[start + len(ANSWER_OPEN):completion.find(ANSWER_CLOSE, start)]""",
    },
    "pairsum_reward": {
        "a number listed once used twice": """
            answer = extract_answer(completion)
            pair = _pair(answer) if answer is not None else None
            if pair is None:
                return 0.0
            a, b = pair
            return 1.0 if a in numbers and b in numbers and a + b == target else 0.0""",
        "checks the sum only": """
            answer = extract_answer(completion)
            pair = _pair(answer) if answer is not None else None
            return 1.0 if pair is not None and sum(pair) == target else 0.0""",
    },
    "language_reward": {
        "no chain of thought scores 1 (the loophole)": """
            lang, words = LANGUAGES[target_language], _cot_words(text)
            return _share_in(words, lang) if words else 1.0""",
        "counts the whole completion, not the thought": """
            lang = LANGUAGES[target_language]
            words = [w.casefold() for w in re.findall(r"[^\\W\\d_]+", text)]
            return _share_in(words, lang) if words and THINK_OPEN in text else 0.0""",
    },
    "advantages": {
        "std of the whole batch, not of the group": """
            r = rewards.float().view(-1, group_size)
            centered = r - r.mean(dim=1, keepdim=True)
            if scale_std:
                centered = centered / (rewards.float().std() + eps)
            return centered.flatten()""",
        "no eps: equal rewards give NaN": """
            r = rewards.float().view(-1, group_size)
            centered = r - r.mean(dim=1, keepdim=True)
            if scale_std:
                centered = centered / r.std(dim=1, keepdim=True)
            return centered.flatten()""",
        "population std (unbiased=False)": """
            r = rewards.float().view(-1, group_size)
            centered = r - r.mean(dim=1, keepdim=True)
            if scale_std:
                centered = centered / (r.std(dim=1, keepdim=True, unbiased=False) + eps)
            return centered.flatten()""",
    },
    "clipped_objective": {
        "max instead of min (a pessimistic bound turned optimistic)": """
            log_ratio = torch.where(on, logp - logp_old, 0.0)
            if seq_ratio:
                log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(logp)
            ratio = torch.exp(log_ratio)
            adv = advantages.to(logp.dtype)[:, None]
            policy_per_token = -torch.max(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)""",
        "exp before masking the padding": """
            ratio = torch.exp(logp - logp_old)
            if seq_ratio:
                ratio = torch.exp(((logp - logp_old) * on).sum(dim=1, keepdim=True)).expand_as(logp)
            adv = advantages.to(logp.dtype)[:, None]
            policy_per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)""",
        "the objective, not the loss (sign)": """
            log_ratio = torch.where(on, logp - logp_old, 0.0)
            if seq_ratio:
                log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(logp)
            ratio = torch.exp(log_ratio)
            adv = advantages.to(logp.dtype)[:, None]
            policy_per_token = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)""",
    },
    "k3_kl": {
        "k1 (log-ratio), which can be negative": """
            kl = torch.where(on, logp - logp_ref, 0.0)""",
        "ratio the wrong way round (pi/pi_ref)": """
            log_ref_ratio = torch.where(on, logp - logp_ref, 0.0)
            kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1""",
    },
    "loss_aggregation": {
        "every row divided by the longest row (T), not its own length": """
            if loss_agg == "token-mean":
                return (x * mask).sum() / n_tokens
            per_row = (x * mask).sum(dim=1) / (norm_len or mask.shape[-1])
            return per_row.sum() / n_rows""",
        "padding not masked": """
            if loss_agg == "token-mean":
                return x.sum() / n_tokens
            per_row = x.sum(dim=1)
            if loss_agg == "seq-mean-token-mean":
                per_row = per_row / mask.sum(dim=1).clamp(min=1)
            else:
                per_row = per_row / (norm_len or mask.shape[-1])
            return per_row.sum() / n_rows""",
        "a plain mean over this micro-batch's rows": """
            if loss_agg == "token-mean":
                return (x * mask).sum() / mask.sum().clamp(min=1)
            per_row = (x * mask).sum(dim=1)
            if loss_agg == "seq-mean-token-mean":
                per_row = per_row / mask.sum(dim=1).clamp(min=1)
            else:
                per_row = per_row / (norm_len or mask.shape[-1])
            return per_row.mean()""",
    },
    "pass_at_k": {
        "draws with replacement: 1 - (1 - c/n)^k": """
            return 1.0 - (1.0 - c / n) ** k""",
        "the product starts one term early": """
            if n - c < k:
                return 1.0
            return 1.0 - math.prod(1.0 - k / i for i in range(n - c, n + 1))""",
    },
    "cons_at_k": {
        "overlapping windows instead of disjoint groups": """
            groups = [row[i:i + k] for i in range(0, len(row) - k + 1)]
            votes = [(g, majority_vote([s["key"] for s in g])) for g in groups]
            return sum(g[w]["correct"] if w is not None else 0.0 for g, w in votes) / len(groups)""",
        "any correct sample in the group (that is pass@k)": """
            groups = [row[i:i + k] for i in range(0, len(row) - k + 1, k)]
            return sum(max(s["correct"] for s in g) for g in groups) / len(groups)""",
    },
    "majority_vote": {
        "None votes too": """
            votes = Counter(keys)
            if not votes or list(votes) == [None]:
                return None
            return keys.index(max(votes, key=votes.__getitem__))""",
        "ties go to the last key seen": """
            votes = Counter(key for key in keys if key is not None)
            if not votes:
                return None
            return keys.index(max(reversed(list(votes)), key=votes.__getitem__))""",
    },
}


def project_copy(dest) -> str:
    """The project's source, tests, data and pytest.ini under `dest` (no out/, no .git)."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "out", "notebooks", "assets", "docs", "__pycache__", ".pytest_cache", ".hypothesis", ".exercises"))
    return str(dest)


def variant(root: str, ex: exercises.Exercise, new_body: str | None) -> str:
    """The text of ex.file in the copy at `root` with the region replaced by `new_body` (None: the stub)."""
    original = exercises.read(root, ex.file)
    _, _, indent = exercises.region(original, ex.name)
    body = exercises.stub(ex, indent) if new_body is None else \
        textwrap.indent(textwrap.dedent(new_body).strip("\n") + "\n", indent)
    return exercises.with_body(original, ex.name, body)


# Grading 60 variants one child process each costs ~60 torch imports. This driver grades a list of
# them in ONE child: torch and pytest are imported once, and before each variant the project's
# modules and test modules are dropped from sys.modules, so pytest imports the variant's code afresh.
# The pytest flags and the reporting plugin are the grader's own (exercises.PYTEST_ARGS).
BATCH_DRIVER = """
import json, os, sys
import pytest, torch
import exercises
project = {f[:-3] for f in os.listdir(".") if f.endswith(".py")} - {"exercises"}
for job in json.load(sys.stdin):
    original = exercises.read(".", job["file"])
    exercises.write(".", job["file"], job["text"])
    for name in list(sys.modules):
        if name.split(".")[0] in project or name.split(".")[0].startswith("test_") or name == "conftest":
            del sys.modules[name]
    os.environ["EXERCISES_REPORT"] = job["report"]
    pytest.main([*exercises.PYTEST_ARGS, *job["tests"]])
    exercises.write(".", job["file"], original)
"""


def grade_batch(root: str, jobs: list, report_dir) -> list:
    """[(exercise, new_body)] -> [verdicts], graded in one child process in the copy at `root`."""
    payload = []
    for n, (ex, new_body) in enumerate(jobs):
        payload.append({"file": ex.file, "text": variant(root, ex, new_body), "tests": list(ex.tests),
                        "report": str(report_dir / f"{os.path.basename(root)}-{n}.jsonl")})
        open(payload[-1]["report"], "w").close()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=root)
    subprocess.run([os.sys.executable, "-c", BATCH_DRIVER], input=json.dumps(payload), text=True, cwd=root, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900, check=True)
    return [exercises.verdicts(exercises.read_report(job["report"]), job["tests"]) for job in payload]


def test_every_region_and_test_exists_and_the_list_spans_the_course():
    assert len(exercises.EXERCISES) >= 15
    for ex in exercises.EXERCISES:
        text = exercises.read(ROOT, ex.file)
        start, end, _ = exercises.region(text, ex.name, ex.file)
        assert end > start, ex.name
        for node in ex.tests:
            path, function = node.split("::")
            assert f"def {function}(" in exercises.read(ROOT, path), node
    assert set(MISTAKES) == set(exercises.BY_NAME)


def test_start_then_reset_restores_the_file_byte_for_byte(tmp_path):
    root = project_copy(tmp_path / "p")
    for ex in exercises.EXERCISES:
        before = exercises.read(root, ex.file)
        exercises.start(root, ex)
        exercises.start(root, ex)  # twice is once: the saved original is not the stub
        assert exercises.state(root, ex) == "started"
        assert "NotImplementedError" in exercises.body(exercises.read(root, ex.file), ex.name)
        exercises.reset(root, ex)
        assert exercises.read(root, ex.file) == before, ex.name
        assert exercises.state(root, ex) == "original"


@pytest.mark.slow
def test_every_exercise_blanked_fails_each_of_its_tests_and_every_mistake_fails_the_grader(tmp_path):
    """Two private copies grade half the variants each, in parallel (the CI box has two cores)."""
    jobs = [(ex, None, None) for ex in exercises.EXERCISES]
    jobs += [(exercises.BY_NAME[name], what, code) for name, ms in MISTAKES.items() for what, code in ms.items()]
    halves = [jobs[0::2], jobs[1::2]]
    copies = [project_copy(tmp_path / f"copy{i}") for i in range(2)]
    (tmp_path / "reports").mkdir()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        graded = list(pool.map(lambda i: grade_batch(copies[i], [(ex, code) for ex, _, code in halves[i]],
                                                      tmp_path / "reports"), range(2)))
    problems = []
    for half, results in zip(halves, graded):
        for (ex, what, _), found in zip(half, results):
            outcomes = {v.test: v.outcome for v in found}
            if what is None:  # blanked: every bound test function has a failing case
                for node in ex.tests:
                    if not any(t.startswith(node) and o != "PASS" for t, o in outcomes.items()):
                        problems.append(f"{ex.name} blanked: {node} still passes")
            elif all(o == "PASS" for o in outcomes.values()):
                problems.append(f"{ex.name}, mistake {what!r}: every test passes")
    assert not problems, "\n".join(problems)
    for copy in copies:  # every variant was undone
        assert all(exercises.read(copy, ex.file) == exercises.read(ROOT, ex.file) for ex in exercises.EXERCISES)


def test_the_grader_gives_a_verdict_for_a_crash_a_syntax_error_and_an_endless_loop(tmp_path, capsys):
    root = project_copy(tmp_path / "p")
    ex = exercises.BY_NAME["pass_at_k"]
    cases = {"while True:\n    pass": "TIMEOUT", "return 1 / 0": "FAIL", "return (": "ERROR",
             "return 0.5": "FAIL"}
    for code, outcome in cases.items():
        original = exercises.read(root, ex.file)
        _, _, indent = exercises.region(original, ex.name)
        exercises.write(root, ex.file, exercises.with_body(original, ex.name, textwrap.indent(code, indent)))
        lines = []
        assert exercises.check(root, ex, limit_s=20, out=lines.append) is False
        exercises.write(root, ex.file, original)
        assert any(line.split()[0] == outcome for line in lines[1:-1] if line.strip()), (code, lines)
        assert "Traceback" not in "\n".join(lines)
    lines = []
    assert exercises.check(root, ex, out=lines.append) is True
    assert lines[-1].startswith("pass_at_k: PASSED")


def test_command_line(tmp_path):
    listing = subprocess.run([os.sys.executable, "exercises.py", "list"], cwd=ROOT, capture_output=True, text=True)
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == len(exercises.EXERCISES)
    bad = subprocess.run([os.sys.executable, "exercises.py", "check", "nope"], cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown exercise 'nope'" in bad.stderr
    shown = subprocess.run([os.sys.executable, "exercises.py", "show", "k3_kl"], cwd=ROOT, capture_output=True,
                           text=True)
    assert shown.returncode == 0 and "test_k3_kl_is_nonnegative_and_zero_at_reference" in shown.stdout
