"""Bounded work for absurd sizes: synthetic rows are made one at a time (row i is a pure function of seed, split
and i), a size no evaluation needs is refused in one line, and a long loop a user sized answers Ctrl-C."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_pool_generate_http import server  # noqa: F401 - the scripted HTTP server fixture

from paft_rl.cli import main
from paft_rl.tasks import get_task, load_row, load_rows, synthetic


def test_render_of_an_absurd_index_makes_one_row(capsys):
    """Before: `pool render synth_mc --index 99999999` generated 10^8 rows (gigabytes, minutes)."""
    started = time.perf_counter()
    assert main(["pool", "render", "synth_mc", "--task", "synth_mc", "--index", "99999999"]) == 0
    assert time.perf_counter() - started < 3
    head = capsys.readouterr().out.splitlines()[0]
    (row,) = get_task("synth_mc").generate(1, 0, "train", start=99999999)
    assert head.endswith(f"gold: {'ABCD'[row['label']]}")


@pytest.mark.parametrize("name", ["synth_mc", "synth_arith", "synth_tool"])
def test_row_i_is_a_pure_function_of_seed_split_and_i(name):
    generate = get_task(name).generate
    rows = generate(2100, 3, "test")
    for start, n in [(0, 1), (998, 4), (1500, 600), (2099, 1), (7, 0)]:
        assert generate(n, 3, "test", start=start) == rows[start:start + n]
    assert generate(5, 4, "test") != rows[:5] and generate(5, 3, "train") != rows[:5]
    # The first rows are those of the generator before rows came in blocks (results measured on them hold).
    make_row = {"synth_mc": synthetic._mc_row, "synth_arith": synthetic._arith_row,
                "synth_tool": synthetic._tool_row}[name]
    stream = random.Random(f"{make_row.__name__}:test:3")
    assert rows[:synthetic.BLOCK] == [make_row(stream) for _ in range(synthetic.BLOCK)]


def test_load_row_is_the_row_load_rows_gives():
    task = get_task("synth_mc")
    rows = load_rows(task, None, "test", limit=1200, seed=2)
    for index in (0, 999, 1000, 1199):
        assert load_row(task, None, "test", index, seed=2) == rows[index]


def test_a_synthetic_limit_no_evaluation_needs_is_refused_before_any_work(tmp_path, tiny_model, capsys):
    """Before: `eval --task synth_mc --limit 99999999` built 10^8 rows and a billion prompts."""
    started = time.perf_counter()
    code = main(["eval", "--task", "synth_mc", "--models", str(tiny_model), "--out", str(tmp_path / "out"),
                 "--limit", "99999999"])
    assert code == 2 and time.perf_counter() - started < 3
    assert capsys.readouterr().err.strip() == ("paft-rl eval: error: a limit of 99999999 rows is more than task "
                                               "'synth_mc' generates at once (10000): lower it")


def test_prompts_are_tokenized_in_short_calls():
    """A tokenizer call cannot be interrupted; one call over every prompt of a big grid ignored Ctrl-C for as long
    as it ran (tens of seconds). Calls of at most `TOKENIZE_CHUNK` texts keep Ctrl-C within a fraction of a second."""
    from paft_rl.formatting import TOKENIZE_CHUNK, tokenize_prompt_texts

    calls = []

    def tokenizer(texts, add_special_tokens):
        calls.append(len(texts))
        return {"input_ids": [[len(text)] for text in texts]}

    texts = [f"prompt {i}" for i in range(2 * TOKENIZE_CHUNK + 5)]
    assert tokenize_prompt_texts(tokenizer, texts, True) == [[len(t)] for t in texts]
    assert calls == [TOKENIZE_CHUNK, TOKENIZE_CHUNK, 5]


def interrupt_when(command: list[str], ready: str, also=lambda: True,
                   timeout: float = 120) -> tuple[float, list[str], int]:
    """Run ``paft-rl COMMAND`` and send it SIGINT once a stderr line holds ``ready`` and ``also()`` is true; returns
    the seconds from the signal to the end of the process, the stderr lines after the signal, and the exit status."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # A library used earlier in this pytest process may have set SIGINT to "ignore", which a child inherits (and then
    # Python installs no KeyboardInterrupt handler): the command must start as a terminal would start it.
    process = subprocess.Popen([sys.executable, "-m", "paft_rl.cli", *command], stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines, sent = [], []
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stderr:
            if sent:
                lines.append(line.rstrip("\n"))
            elif ready in line:
                while not also():
                    time.sleep(0.01)
                process.send_signal(signal.SIGINT)
                sent.append(time.perf_counter())
        status = process.wait()
        ended = time.perf_counter()
    finally:
        timer.cancel()
    assert sent, f"never saw {ready!r}"
    return ended - sent[0], lines, status


def test_pool_generate_answers_ctrl_c_while_requests_are_in_flight(server, tmp_path):  # noqa: F811 - fixture
    """Before: Ctrl-C waited for every request in flight (its timeout, then its retries): here about 20 s."""
    import yaml
    from test_pool_generate_http import TASK

    server.scripts = {"slow": [(200, "{}", {}, 30)]}  # every reply takes 30 s
    config = {"task": TASK, "generators": [{"name": "slow", "model": "slow", "base_url": server.url}],
              "modes": ["zero_shot"], "per_model_per_mode": 8, "templates_per_request": 2,
              "requests": {"concurrency": 2, "timeout": 5, "retries": 3, "backoff": 0.01, "backoff_max": 0.05},
              "split": {"heldout_fraction": 0.25, "seed": 1}}
    (tmp_path / "generate.yaml").write_text(yaml.safe_dump(config))
    seconds, lines, status = interrupt_when(["pool", "generate", "--config", str(tmp_path / "generate.yaml"),
                                             "--out", str(tmp_path / "pool.jsonl")], "slow: 4 requests",
                                             also=lambda: server.in_flight == 2)
    assert status == 130 and seconds < 2, (seconds, lines)
    assert lines[-1] == "paft-rl pool: interrupted"
    assert not (tmp_path / "pool.jsonl").exists()
