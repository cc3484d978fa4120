"""Graded exercises cut from the project's own code (the course kit; docs/COURSE.md is the guide).

An exercise is a marked region of a real function, the lines a student writes:

    # >>> exercise: rmsnorm
    x32 = x.float()
    ...
    # <<< exercise: rmsnorm

    python exercises.py list              # every exercise: file, function, paper section, state
    python exercises.py start rmsnorm     # the region -> a stub that raises the hint (the original is saved)
    python exercises.py check rmsnorm     # the project's own tests bound to it, under a time limit
    python exercises.py reset rmsnorm     # the original code back
    python exercises.py show rmsnorm      # the hint and the tests, without touching anything

`start` writes the original region to .exercises/<name>.txt (ignored by git) and `reset` puts it
back (from git's HEAD if that file is gone). `check` runs pytest in a child process: a student's
exception, wrong shape or endless loop becomes a verdict (FAIL, ERROR, TIMEOUT), never a hang. It
prints one line per test and, for a failing one, what the test expected. Exit status: 0 when every
test passes, 1 when one does not, 2 for a bad command.

Every exercise is proved gradeable by tests/test_exercises.py: blanked, each of its tests fails;
restored, the file is byte for byte the original and the suite's own run shows its tests pass; and
the common mistakes listed there (the ones docs/COURSE.md warns about) each fail the grader.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.abspath(__file__))
SAVE_DIR = ".exercises"


@dataclass(frozen=True)
class Exercise:
    name: str
    file: str          # relative to the project root
    function: str      # where the region lives, for the reader
    paper: str         # the paper, section or equation it implements
    hint: str          # what the stub raises: what to compute, which helpers exist
    tests: tuple       # pytest node ids (a function's id runs all its parametrized cases)
    limit_s: int = 90  # wall-clock limit for the whole check


EXERCISES = [
    Exercise("rmsnorm", "model.py", "RMSNorm.forward", "Zhang & Sennrich 2019 (RMSNorm)",
             "return x / sqrt(mean(x^2 over the last dim) + self.eps) * self.weight, computed in float32 "
             "and cast back to x's dtype before the weight",
             ("tests/test_model.py::test_rmsnorm_matches_formula",)),
    Exercise("rotary", "model.py", "rotary_tables", "RoFormer eq. 34 (rotary position embedding)",
             "angle(pos, i) = pos * theta^(-2i/D) for i = 0..D/2-1; return (cos, sin) of shape "
             "(max_seq_len, D) with each frequency written twice, [f0..f_{D/2-1}, f0..f_{D/2-1}], to match "
             "rotate_half",
             ("tests/test_model.py::test_rotary_matches_complex_rotation",
              "tests/test_model.py::test_rotary_scores_depend_only_on_relative_position")),
    Exercise("attention", "model.py", "Attention.forward",
             "Vaswani et al. 2017 eq. 1; grouped-query attention (Ainslie et al. 2023)",
             "y (B, H, T, D) = softmax(q k^T / sqrt(D) + mask) v, where query head h reads kv head "
             "h // (H // K) (repeat_interleave k and v), `mask` (bool, True = may attend) is used when given "
             "and a causal mask (query t sees keys <= t) when mask is None and T > 1",
             ("tests/test_model.py::test_gqa_attention_matches_per_head_loop",
              "tests/test_model.py::test_model_is_causal_and_checks_length",
              "tests/test_model.py::test_forward_with_cache_in_chunks_matches_full_forward")),
    Exercise("kv_cache", "model.py", "KVCache.update", "the KV cache of autoregressive decoding",
             "write k, v (B, K, T, D) into self.k[layer], self.v[layer] at slots self.pos .. self.pos+T "
             "(ValueError if that passes self.max_len) and return all filled slots 0 .. self.pos+T of both",
             ("tests/test_model.py::test_forward_with_cache_in_chunks_matches_full_forward",
              "tests/test_model.py::test_greedy_with_cache_equals_full_recomputation_on_ragged_batches",
              "tests/test_model.py::test_sampling_with_cache_equals_full_recomputation")),
    Exercise("top_p", "model.py", "sample_next", "Holtzman et al. 2020 (nucleus sampling)",
             "keep the smallest set of likeliest tokens whose probability reaches top_p (the token that "
             "crosses p is kept, so at least one is) and set every other logit to -inf",
             ("tests/test_model.py::test_top_k_1_and_tiny_top_p_equal_greedy",
              "tests/test_model.py::test_sample_next_follows_softmax_top_k_and_top_p")),
    Exercise("token_logprobs", "model.py", "token_logprobs", "R1 eq. 1's pi_theta(o_t | q, o_<t)",
             "logp (B, T-1) = log softmax(model(tokens[:, :-1]) / temperature) at each next token "
             "tokens[:, 1:]; with entropy=True also H = -sum_v p_v log p_v per position, without gradient",
             ("tests/test_model.py::test_token_logprobs_matches_prefix_by_prefix_loop",
              "tests/test_model.py::test_sampler_and_trainer_agree_on_log_probs_at_the_sampling_temperature",
              "tests/test_model.py::test_token_logprobs_has_gradients",
              "tests/test_grpo.py::test_update_reports_the_policy_entropy_over_completion_tokens")),
    Exercise("completion_mask", "common.py", "pack", "R1 section 2.3.3 (SFT on completions only)",
             "tokens (B, T) = prompt + completion right-padded with pad_id, T the longest row; mask (B, T-1) "
             "is 1 exactly where token_logprobs' position t predicts a completion token (token t+1)",
             ("tests/test_grpo.py::test_pack_aligns_mask_with_token_logprobs",
              "tests/test_model.py::test_sampler_and_trainer_agree_on_log_probs_at_the_sampling_temperature",
              "tests/test_sft.py::test_sft_loss_equals_a_slow_per_token_reference",
              "tests/test_sft.py::test_prompt_tokens_are_never_targets")),
    Exercise("format_reward", "rewards.py", "format_reward", "R1-Zero section 2.2.2 (format reward)",
             "1.0 iff prefill + completion is one non-empty <think> block then one non-empty <answer> block, "
             "whitespace around them, at most one <|endoftext|> at the very end, no other special-token "
             "text (_FORMAT_RE helps); else 0.0",
             ("tests/test_rewards.py::test_format_reward",
              "tests/test_rewards.py::test_format_reward_prefilled_template")),
    Exercise("extract_answer", "rewards.py", "extract_answer", "R1-Zero section 2.2.2 (accuracy reward)",
             "the stripped text of the LAST complete <answer>...</answer> block (from the last <answer> to "
             "the first </answer> after it); None when there is none",
             ("tests/test_rewards.py::test_extract_answer",)),
    Exercise("pairsum_reward", "rewards.py", "pairsum_reward", "R1-Zero section 2.2.2 (accuracy reward)",
             "1.0 iff the extracted answer is 'a+b' (_pair parses it), a and b are at two different "
             "positions of `numbers` (a number listed once cannot be used twice) and a + b == target",
             ("tests/test_rewards.py::test_pairsum_reward_by_hand",)),
    Exercise("language_reward", "rewards.py", "language_consistency_reward",
             "R1 section 2.3.2 (language consistency reward)",
             "the share of the chain of thought's words (_cot_words) in LANGUAGES[target_language] "
             "(_share_in); 0.0 when there is no <think> tag or no word in it",
             ("tests/test_rewards.py::test_language_consistency_reward_needs_a_chain_of_thought",)),
    Exercise("advantages", "grpo.py", "group_advantages", "R1 eq. 3 / DeepSeekMath eq. 3 (group advantage)",
             "view the flat rewards as (N, G) groups; A = r - group mean, divided by (unbiased group std + eps) "
             "when scale_std; return it flat (N*G,); equal rewards give exactly 0",
             ("tests/test_grpo.py::test_group_advantages_match_loop",
              "tests/test_grpo.py::test_all_equal_rewards_give_exactly_zero")),
    Exercise("clipped_objective", "grpo.py", "grpo_loss", "R1 eq. 1 / DeepSeekMath eq. 3 (clipped surrogate)",
             "log_ratio = logp - logp_old on completion tokens (0 on padding, BEFORE exp; summed per row when "
             "seq_ratio); ratio = exp(log_ratio); adv = advantages as (B, 1); policy_per_token = "
             "-min(ratio * adv, clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)",
             ("tests/test_grpo.py::test_grpo_loss_matches_loop",
              "tests/test_grpo.py::test_padding_positions_never_reach_an_exp",
              "tests/test_grpo.py::test_gradient_on_hand_computed_batch",
              "tests/test_grpo.py::test_ratio_is_one_and_nothing_clipped_at_mu_1")),
    Exercise("k3_kl", "grpo.py", "grpo_loss", "R1 eq. 2 / DeepSeekMath eq. 4 (k3 KL estimator)",
             "kl (B, T) = pi_ref/pi - log(pi_ref/pi) - 1 per token, from log_ref_ratio = logp_ref - logp "
             "taken on completion tokens only (0 on padding, before the exp)",
             ("tests/test_grpo.py::test_grpo_loss_matches_loop",
              "tests/test_grpo.py::test_k3_kl_is_nonnegative_and_zero_at_reference")),
    Exercise("loss_aggregation", "grpo.py", "grpo_loss.aggregate",
             "DeepSeekMath eq. 3's 1/G sum_i 1/|o_i| sum_t; DAPO's token mean; Dr. GRPO's constant",
             "(B, T) terms -> one number, masked by `mask`: 'token-mean' sums all tokens / n_tokens; "
             "'seq-mean-token-mean' divides each row's sum by its own token count; the third divides it by "
             "norm_len (or T); both then sum the rows / n_rows",
             ("tests/test_grpo.py::test_grpo_loss_matches_loop",
              "tests/test_grpo.py::test_dr_grpo_constant_norm",
              "tests/test_grpo.py::test_accumulated_gradient_equals_full_batch_gradient")),
    Exercise("pass_at_k", "evaluate.py", "pass_at_k", "Chen et al. 2021 section 2.1; R1 section 3 (pass@k)",
             "1 - C(n-c, k) / C(n, k): 1.0 when n - c < k, else a product over i = n-c+1 .. n of (1 - k/i), "
             "which never forms the huge binomials",
             ("tests/test_evaluate.py::test_pass_at_k_equals_its_closed_form",
              "tests/test_evaluate.py::test_pass_at_1_and_cons_at_k_by_hand")),
    Exercise("cons_at_k", "evaluate.py", "cons_at", "R1 section 3 (cons@64, majority voting)",
             "split the row into n // k disjoint groups of k consecutive samples, majority_vote each group's "
             "'key's, score the winner's 'correct' (0 when no sample has an answer), average over the groups",
             ("tests/test_evaluate.py::test_cons_at_k_over_disjoint_groups_with_ties",
              "tests/test_evaluate.py::test_pass_at_1_and_cons_at_k_by_hand",
              "tests/test_evaluate.py::test_cons_at_k_votes_on_meanings_not_spellings")),
    Exercise("majority_vote", "rewards.py", "majority_vote", "R1 section 3 (cons@64, majority voting)",
             "the index of the first sample whose key is the most common non-None key (a tie goes to the "
             "key seen first); None when every key is None",
             ("tests/test_rewards.py::test_majority_vote",
              "tests/test_rewards.py::test_majority_vote_against_a_slow_loop")),
]
BY_NAME = {ex.name: ex for ex in EXERCISES}


class UsageError(Exception):
    """A bad command: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- the marked regions


def markers(name: str) -> tuple[str, str]:
    return f"# >>> exercise: {name}", f"# <<< exercise: {name}"


def region(text: str, name: str, path: str = "") -> tuple[int, int, str]:
    """(first body line, line after the body, indent) of exercise `name` in `text`'s lines."""
    lines = text.splitlines(keepends=True)
    open_, close = markers(name)
    starts = [i for i, line in enumerate(lines) if line.strip() == open_]
    ends = [i for i, line in enumerate(lines) if line.strip() == close]
    if len(starts) != 1 or len(ends) != 1 or ends[0] <= starts[0]:
        raise UsageError(f"{path or 'file'}: expected one '{open_}' line followed by one '{close}' line "
                         f"(found {len(starts)} and {len(ends)}); `python exercises.py reset {name}` restores it")
    indent = lines[starts[0]][:len(lines[starts[0]]) - len(lines[starts[0]].lstrip())]
    return starts[0] + 1, ends[0], indent


def body(text: str, name: str) -> str:
    lines = text.splitlines(keepends=True)
    start, end, _ = region(text, name)
    return "".join(lines[start:end])


def with_body(text: str, name: str, new_body: str) -> str:
    """`text` with exercise `name`'s body replaced by `new_body` (whole lines, already indented)."""
    lines = text.splitlines(keepends=True)
    start, end, _ = region(text, name)
    if new_body and not new_body.endswith("\n"):
        new_body += "\n"
    return "".join(lines[:start]) + new_body + "".join(lines[end:])


def stub(ex: Exercise, indent: str) -> str:
    message = f"exercise {ex.name}: {ex.hint}. Check it: python exercises.py check {ex.name}"
    return f"{indent}raise NotImplementedError({message!r})\n"


def read(root: str, path: str) -> str:
    with open(os.path.join(root, path), encoding="utf-8", newline="") as f:
        return f.read()


def write(root: str, path: str, text: str) -> None:
    full = os.path.join(root, path)
    tmp = full + ".exercise-tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, full)


def saved_path(root: str, ex: Exercise) -> str:
    return os.path.join(root, SAVE_DIR, f"{ex.name}.txt")


def original_body(root: str, ex: Exercise) -> str:
    """The region as the project wrote it: the copy `start` saved, else git's HEAD version."""
    path = saved_path(root, ex)
    if os.path.exists(path):
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    try:
        head = subprocess.run(["git", "show", f"HEAD:{ex.file}"], cwd=root, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise UsageError(f"no saved original for {ex.name} ({path}) and git cannot show HEAD:{ex.file}")
    return body(head, ex.name)


def state(root: str, ex: Exercise) -> str:
    current = body(read(root, ex.file), ex.name)
    if "raise NotImplementedError(" in current and f"exercise {ex.name}:" in current:
        return "started"
    if os.path.exists(saved_path(root, ex)):
        return "original" if current == original_body(root, ex) else "edited"
    return "original"


def start(root: str, ex: Exercise) -> None:
    text = read(root, ex.file)
    _, _, indent = region(text, ex.name, ex.file)
    if state(root, ex) == "started":
        return
    os.makedirs(os.path.join(root, SAVE_DIR), exist_ok=True)
    if not os.path.exists(saved_path(root, ex)):
        with open(saved_path(root, ex), "w", encoding="utf-8", newline="") as f:
            f.write(body(text, ex.name))
    write(root, ex.file, with_body(text, ex.name, stub(ex, indent)))


def reset(root: str, ex: Exercise) -> None:
    text = read(root, ex.file)
    region(text, ex.name, ex.file)
    write(root, ex.file, with_body(text, ex.name, original_body(root, ex)))
    if os.path.exists(saved_path(root, ex)):
        os.remove(saved_path(root, ex))


# ----------------------------------------------------------------------------- the grader


@dataclass
class Verdict:
    test: str      # the pytest node id
    outcome: str   # PASS, FAIL, ERROR (the test could not run), TIMEOUT, NOT RUN
    detail: str    # for a failure: what the test expected (the assertion's message)


def _first_lines(text: str, n: int = 6, width: int = 160) -> str:
    lines = [line.rstrip()[:width] for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:n] + (["..."] if len(lines) > n else []))


# pytest plugin hooks: active only when pytest runs with `-p exercises` (check() does), which appends one
# JSON line per test phase to $EXERCISES_REPORT, flushed at once, so a run killed at its time limit still
# says which test was running.

def _report(record: dict) -> None:
    path = os.environ.get("EXERCISES_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _crash_message(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)


def pytest_runtest_logstart(nodeid, location):
    _report({"event": "start", "test": nodeid})


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _report({"event": "done", "test": report.nodeid, "when": report.when, "outcome": report.outcome,
                 "message": _crash_message(report) if report.failed else ""})


def pytest_collectreport(report):
    if report.failed:
        _report({"event": "collect_error", "test": report.nodeid, "message": str(report.longrepr)})


# the grader's pytest flags: this file as the reporting plugin, no cache, no hypothesis plugin (its
# @given tests run without it), the project's addopts off, no tracebacks (the report has the message)
PYTEST_ARGS = ("-q", "-p", "exercises", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-o", "addopts=",
               "--tb=no", "--no-header", "-W", "ignore")


def run_tests(root: str, tests, limit_s: float) -> list[Verdict]:
    """Run pytest on `tests` in a child process under `limit_s` seconds; one Verdict per test case.
    The child is killed with its process group at the limit: the test then running is a TIMEOUT."""
    fd, report_path = tempfile.mkstemp(prefix="exercise-", suffix=".jsonl")
    os.close(fd)
    env = dict(os.environ, EXERCISES_REPORT=report_path, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    timed_out = False
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=(os.name == "posix"))
    try:
        output, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        if os.name == "posix":
            os.killpg(proc.pid, 9)
        else:
            proc.kill()
        output, _ = proc.communicate()
    records = read_report(report_path)
    os.remove(report_path)
    return verdicts(records, tests, timed_out, limit_s, output)


def read_report(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def verdicts(records: list[dict], tests, timed_out: bool = False, limit_s: float = 0.0, output: str = "") -> list[Verdict]:
    """The plugin's records of one pytest run -> one Verdict per test case (and per file that failed
    to import); after a timeout, the test then running is a TIMEOUT and those not reached NOT RUN."""
    found, running = {}, None
    for r in records:
        if r["event"] == "start":
            running = r["test"]
        elif r["event"] == "collect_error":
            found[r["test"] or "collection"] = Verdict(r["test"] or "collection", "ERROR",
                                                       "the test file could not be imported:\n"
                                                       + _first_lines(r["message"], 8))
        else:
            running = None if r["test"] == running and r["when"] != "setup" else running
            previous = found.get(r["test"])
            if previous and previous.outcome != "PASS":
                continue  # a failed setup or call stays the verdict; teardown cannot undo it
            outcome = {"passed": "PASS", "failed": "FAIL" if r["when"] == "call" else "ERROR",
                       "skipped": "SKIP"}[r["outcome"]]
            found[r["test"]] = Verdict(r["test"], outcome, _first_lines(r["message"]))
    if timed_out:
        if running is not None:
            found[running] = Verdict(running, "TIMEOUT", f"no result within the {limit_s:.0f} s limit "
                                     "(an endless loop, or far too slow?)")
        for test in tests:
            if not any(v.startswith(test) for v in found):
                found[test] = Verdict(test, "NOT RUN", "the run stopped at the time limit before this test")
    if not found:
        found["pytest"] = Verdict("pytest", "ERROR", "pytest reported no test:\n" + _first_lines(output, 8))
    return list(found.values())


def check(root: str, ex: Exercise, limit_s: float | None = None, out=print) -> bool:
    """Grade exercise `ex` in the tree at `root`: print each test's verdict; True when all pass."""
    limit = limit_s or ex.limit_s
    out(f"checking {ex.name} ({ex.file}: {ex.function}) with {len(ex.tests)} test(s), limit {limit:.0f} s")
    t0 = time.time()
    verdicts = run_tests(root, ex.tests, limit)
    for v in verdicts:
        out(f"  {v.outcome:<7} {v.test.split('/')[-1]}")
        if v.outcome != "PASS" and v.detail:
            if "NotImplementedError" in v.detail and f"exercise {ex.name}:" in v.detail:
                out("          not written yet (the stub raised)")
            else:
                out("\n".join("          " + line for line in v.detail.splitlines()))
    passed = all(v.outcome in ("PASS", "SKIP") for v in verdicts)
    n_pass = sum(v.outcome == "PASS" for v in verdicts)
    out(f"{ex.name}: {'PASSED' if passed else 'NOT YET'}: {n_pass}/{len(verdicts)} tests pass "
        f"({time.time() - t0:.1f} s)")
    return passed


# ----------------------------------------------------------------------------- command line


def exercise(name: str) -> Exercise:
    if name not in BY_NAME:
        raise UsageError(f"unknown exercise {name!r}; `python exercises.py list` shows the {len(EXERCISES)}")
    return BY_NAME[name]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exercises: " + ", ".join(BY_NAME))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every exercise: file, function, paper section and state")
    for command, what in [("start", "replace the region with a stub that raises the hint"),
                          ("check", "run the project's tests bound to the exercise, under a time limit"),
                          ("reset", "put the original code back"),
                          ("show", "print the hint and the tests, change nothing")]:
        p = sub.add_parser(command, help=what)
        p.add_argument("name", help="the exercise's name (`list` shows them)")
        if command == "check":
            p.add_argument("--limit-s", type=float, default=None,
                           help="wall-clock limit for the whole check, seconds (default: the exercise's own)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for i, ex in enumerate(EXERCISES, 1):
                print(f"{i:>2}. {ex.name:<18} {state(ROOT, ex):<9} {ex.file + ': ' + ex.function:<40} {ex.paper}")
            return 0
        ex = exercise(args.name)
        if args.command == "show":
            print(f"{ex.name}: {ex.file}, {ex.function} ({ex.paper})\n  {ex.hint}\n  tests:")
            print("\n".join(f"    {t}" for t in ex.tests))
        elif args.command == "start":
            start(ROOT, ex)
            print(f"started {ex.name}: write it in {ex.file} ({ex.function}), between the '# >>> exercise' "
                  f"lines; then `python exercises.py check {ex.name}`")
        elif args.command == "reset":
            reset(ROOT, ex)
            print(f"reset {ex.name}: {ex.file} holds the original code again")
        else:
            return 0 if check(ROOT, ex, args.limit_s) else 1
    except UsageError as e:
        print(f"exercises.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):  # `python exercises.py list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
