"""`paft-rl pool ...` end to end: output, exit codes, and one-line errors (never a traceback)."""

import json
import os
import subprocess
import sys

import pytest

from paft_rl.cli import main


def paft(*args):
    """Run the real console entry point in a subprocess, as a user would."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "paft_rl.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture
def gsm_pool(tmp_path):
    path = tmp_path / "pool.jsonl"
    records = [{"id": f"t{i}", "text": f"Problem {i}: {{question}}\nAnswer:"} for i in range(6)]
    records.append({"id": "h0", "text": "## Task\n{question}\n## Your answer", "split": "heldout"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_validate_ok(gsm_pool, capsys):
    assert main(["pool", "validate", str(gsm_pool), "--task", "gsm8k"]) == 0
    assert "valid for task 'gsm8k': 7 templates, 6 train, 1 held-out" in capsys.readouterr().out


def test_validate_lists_every_problem(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "{question} {foo}"}\n{"id": "a", "text": ""}\n')
    assert main(["pool", "validate", str(path), "--task", "gsm8k"]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "unknown field {foo}" in err and "is empty" in err and "id 'a'" in err


def test_stats_json(gsm_pool, capsys):
    assert main(["pool", "stats", str(gsm_pool), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["count"], stats["train"], stats["heldout"]) == (7, 6, 1)


def test_split_writes_new_pool(gsm_pool, tmp_path, capsys):
    out = tmp_path / "split" / "out.jsonl"
    assert main(["pool", "split", str(gsm_pool), "--heldout-fraction", "0.3", "--seed", "5", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 7 and sum(r["split"] == "heldout" for r in lines) == 2


def test_split_options_from_flags_in_either_spelling_or_a_config_file(gsm_pool, tmp_path):
    by_flags = tmp_path / "flags.jsonl"
    assert main(["pool", "split", str(gsm_pool), "--heldout_fraction", "0.5", "--seed", "1",
                 "--out", str(by_flags)]) == 0
    (tmp_path / "split.yaml").write_text(f"heldout_fraction: 0.5\nseed: 1\nout: {tmp_path / 'file.jsonl'}\n")
    assert main(["pool", "split", str(gsm_pool), "--config", str(tmp_path / "split.yaml")]) == 0
    assert (tmp_path / "file.jsonl").read_text() == by_flags.read_text()
    assert sum(json.loads(line)["split"] == "heldout" for line in by_flags.read_text().splitlines()) == 4


def test_render_given_template_and_drawn(gsm_pool, capsys):
    assert main(["pool", "render", str(gsm_pool), "--task", "synth_arith", "--index", "2", "--template", "h0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# template h0 (heldout, given)") and "## Task\n" in out
    assert main(["pool", "render", str(gsm_pool), "--task", "synth_arith", "--index", "2", "--seed", "3"]) == 0
    assert "drawn for seed 3, position 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["pool", "validate", "missing.jsonl"], "neither a file nor a built-in pool"),
        (["pool", "validate", "{pool}", "--task", "nope"], "unknown task 'nope'"),
        (["pool", "stats", "{bad}"], "bad.jsonl:2: not valid JSON"),
        (["pool", "render", "{pool}", "--task", "synth_mc", "--index", "0", "--template", "zz"],
         "no template with id 'zz'"),
        (["pool", "render", "{pool}", "--task", "piqa", "--data", "./none.jsonl", "--index", "0"], "does not exist"),
        (["pool", "split", "{pool}", "--heldout-fraction", "2", "--seed", "0", "--out", "x.jsonl"],
         "option heldout_fraction must be between 0 and 1 (exclusive), got 2.0"),
        (["pool", "split", "{pool}", "--heldout-fraction", "0.5", "--sed", "0", "--out", "x.jsonl"],
         "unknown option '--sed'; did you mean '--seed'?"),
        (["pool", "split", "{pool}", "--heldout-fraction", "0.5", "--out", "x.jsonl"],
         "the following arguments are required: --seed"),
        (["pool", "generate", "--config", "{bad}", "--out", "x.jsonl", "--quite"],
         "unknown option '--quite'; did you mean '--quiet'?"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ],
)
def test_bad_input_one_line_no_traceback(args, message, gsm_pool, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "{question}"}\n{nope\n')
    args = [a.format(pool=gsm_pool, bad=bad) for a in args]
    result = paft(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_lists_commands():
    result = paft("--help")
    assert result.returncode == 0 and "pool" in result.stdout and "grpo" in result.stdout
