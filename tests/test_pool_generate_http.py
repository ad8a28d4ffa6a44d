"""`pool generate` against a real OpenAI-compatible HTTP server on 127.0.0.1 serving scripted replies.

The server is the standard library's ThreadingHTTPServer; each model name has a script (a list of
replies consumed in order, then a default), so one run can mix good, malformed, slow, rate-limited,
failing and unauthorised endpoints. Backoff waits go through a recording ``sleep`` so no test sleeps for real.
"""

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paft_rl.construction import config_from_dict, generate_pool
from paft_rl.construction.cli import main as generate_main
from prompt_pool import UserError, read_pool

WORDS = ("please kindly now solve answer this quiz item carefully read consider the following prompt task below "
         "respond think briefly state reply choose decide given text exam friend hello short formal casual sheet "
         "problem query request note write final here your best guess explain").split()

TASK = {"name": "quiz", "description": "Answer a short quiz question, using the context when given.",
        "fields": ["question", "context"], "required_fields": ["question"], "answer_cue": "Answer:"}


def template_text(n: int) -> str:
    """A distinct template per number: shuffled words keep n-gram overlap between any two low."""
    words = random.Random(n).sample(WORDS, 8)
    return f"{' '.join(words[:4]).capitalize()}: {{question}}\n{' '.join(words[4:])}.\nAnswer:"


def good_reply(n: int, style: str = "tags") -> str:
    """Two templates in one of the shapes models really answer in."""
    a, b = template_text(2 * n), template_text(2 * n + 1)
    if style == "numbered":
        return f"Sure! Here are two templates:\n1. {a}\n2. {b}"
    if style == "fenced":
        return f"```\n{a}\n```\n\n```\n{b}\n```\nEnjoy."
    return f"Here you go.\n<template>\n{a}\n</template>\n<template>{b}</template>"


class ScriptedServer:
    """Per-model scripts of replies: ``(status, body, headers, delay)`` tuples or callables of the call number."""

    def __init__(self):
        self.scripts: dict[str, list] = {}
        self.calls: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.counter = 0

    def next_reply(self, model: str):
        with self.lock:
            self.calls[model] = self.calls.get(model, 0) + 1
            script = self.scripts.get(model, [])
            reply = script.pop(0) if script and len(script) > 1 else (script[0] if script else (404, "no model", {}, 0))
            self.counter += 1
            return reply(self.counter) if callable(reply) else reply


def ok(style: str = "tags", delay: float = 0.0):
    """A 200 chat completion whose content is a fresh good reply (numbered by the server's call count)."""
    def reply(n):
        body = {"choices": [{"message": {"role": "assistant", "content": good_reply(n, style)}}]}
        return 200, json.dumps(body), {}, delay
    return reply


@pytest.fixture
def server():
    scripted = ScriptedServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with scripted.lock:
                scripted.bodies.append({**body, "authorization": self.headers.get("Authorization")})
                scripted.in_flight += 1
                scripted.max_in_flight = max(scripted.max_in_flight, scripted.in_flight)
            try:
                status, payload, headers, delay = scripted.next_reply(body["model"])
                if delay:
                    time.sleep(delay)
            finally:
                # Before the reply goes out: once the client has it, its next request may arrive at once (counted
                # after the reply, a busy machine showed 3 in flight for a limit of 2).
                with scripted.lock:
                    scripted.in_flight -= 1
            try:
                data = payload.encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up, as scripted

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield scripted
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


class RecordingSleep:
    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


def make_config(server, models, tmp_path, **overrides):
    generators = [{"name": m, "model": m, "base_url": server.url, **(extra or {})} for m, extra in models.items()]
    data = {"task": TASK, "generators": generators, "modes": ["zero_shot"], "per_model_per_mode": 4,
            "templates_per_request": 2, "cache": str(tmp_path / "cache.jsonl"),
            "requests": {"concurrency": 4, "timeout": 5, "retries": 3, "backoff": 0.01, "backoff_max": 0.05},
            "split": {"heldout_fraction": 0.25, "seed": 1}}
    data.update(overrides)
    return config_from_dict(data)


def test_pool_from_two_endpoints_with_messy_replies(server, tmp_path):
    server.scripts = {"alpha": [ok("tags")], "beta": [ok("numbered"), ok("fenced")]}
    config = make_config(server, {"alpha": None, "beta": None}, tmp_path,
                         modes=["few_shot", "zero_shot"], seed_templates=["Q: {question}\nAnswer:"])
    result = generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None)
    pool = read_pool(tmp_path / "pool.jsonl")
    assert server.calls == {"alpha": 4, "beta": 4}  # 2 modes x ceil(4 / 2) requests each
    assert result.report["requests"]["received"] == 8 and not result.failures
    generated = [t for t in pool.templates if t.source["generator"] != "human"]
    assert len(generated) == 16  # 8 replies x 2 templates, all distinct and valid
    assert pool.validate(config.task) and len(pool.heldout) >= 1
    assert {(t.source["generator"], t.source["mode"]) for t in generated} == {
        (g, m) for g in ("alpha", "beta") for m in ("few_shot", "zero_shot")}
    assert all(t.source["time"] and t.source["temperature"] == 0.9 for t in generated)
    assert "Sure!" not in " ".join(t.text for t in generated) and "Enjoy" not in " ".join(t.text for t in generated)
    user_turns = [b["messages"][1]["content"] for b in server.bodies]
    few_shot_prompts = [turn for turn in user_turns if "Q: {question}" in turn]
    assert len(few_shot_prompts) == 4  # the seed template is shown in few-shot requests only
    assert [s["step"] for s in result.report["filters"]] == [
        "placeholders", "answer_cue", "length", "exact_duplicates", "near_duplicates"]


def test_429_and_500_are_retried_with_backoff(server, tmp_path):
    server.scripts = {"flaky": [(429, '{"error": {"message": "slow down"}}', {"Retry-After": "0.02"}, 0),
                                (500, "oops", {}, 0), (503, "", {}, 0), ok()]}
    sleep = RecordingSleep()
    config = make_config(server, {"flaky": {"concurrency": 1}}, tmp_path)
    result = generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None, sleep=sleep)
    assert server.calls["flaky"] == 2 + 3  # two requests, three retries for the first
    assert result.report["requests"]["retries"] == 3 and result.report["requests"]["received"] == 2
    assert sleep.waits[0] == 0.02  # Retry-After honoured
    assert all(0 < w <= 0.05 for w in sleep.waits[1:]) and len(sleep.waits) == 3
    assert not result.failures


def test_retries_exhausted_fail_the_request_not_the_run(server, tmp_path):
    server.scripts = {"good": [ok()], "down": [(500, "boom", {}, 0)], "garbled": [(200, "{not json", {}, 0)]}
    config = make_config(server, {"good": None, "down": None, "garbled": None}, tmp_path)
    result = generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None, sleep=RecordingSleep())
    assert server.calls["down"] == server.calls["garbled"] == 2 * 4  # 2 requests x (1 + 3 retries)
    outcomes = result.report["generators"]
    assert outcomes["down"]["failed"] == 2 and "HTTP 500" in outcomes["down"]["errors"][0]
    assert "malformed response body" in outcomes["garbled"]["errors"][0]
    assert outcomes["good"]["received"] == 2 and len(result.pool) == 4
    assert len(result.failures) == 2


def test_401_stops_that_generator_and_names_the_endpoint(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QUIZ_KEY", "sk-wrong")
    server.scripts = {"good": [ok()], "locked": [(401, '{"error": {"message": "invalid api key"}}', {}, 0)]}
    config_path = tmp_path / "gen.yaml"
    config = {"task": TASK, "modes": ["zero_shot"], "per_model_per_mode": 6, "templates_per_request": 2,
              "requests": {"backoff": 0.01},
              "generators": [{"name": "good", "model": "good", "base_url": server.url},
                             {"name": "locked", "model": "locked", "base_url": server.url,
                              "api_key_env": "QUIZ_KEY", "concurrency": 1}]}
    config_path.write_text(json.dumps(config))  # JSON is YAML
    out = tmp_path / "pool.jsonl"
    assert generate_main(["generate", "--config", str(config_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{server.url}/chat/completions" in err and "HTTP 401" in err and "$QUIZ_KEY" in err
    assert "invalid api key" in err
    assert server.calls["locked"] == 1  # no retries, and its queued requests were never sent
    assert any(b["authorization"] == "Bearer sk-wrong" for b in server.bodies)
    pool = read_pool(out)
    assert len(pool) == 6 and {t.source["generator"] for t in pool.templates} == {"good"}
    report = json.loads((tmp_path / "pool.report.json").read_text())
    assert report["generators"]["locked"]["fatal"] and report["generators"]["good"]["fatal"] is None


def test_404_everywhere_is_one_clear_error(server, tmp_path):
    server.scripts = {"ghost": [(404, '{"error": {"message": "model not found"}}', {}, 0)]}
    config = make_config(server, {"ghost": None}, tmp_path)
    with pytest.raises(UserError, match=r"127\.0\.0\.1.*model 'ghost'.*HTTP 404.*check base_url and the model name"):
        generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None)
    assert not (tmp_path / "pool.jsonl").exists()


def test_slow_reply_times_out_and_is_retried(server, tmp_path):
    server.scripts = {"slow": [ok(delay=3.0), ok()]}
    config = make_config(server, {"slow": {"concurrency": 1}}, tmp_path, per_model_per_mode=2,
                         requests={"timeout": 0.3, "retries": 2, "backoff": 0.01})
    result = generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None, sleep=RecordingSleep())
    assert result.report["requests"]["retries"] == 1 and result.report["requests"]["received"] == 1
    assert len(result.pool) == 2


def test_concurrency_limit_is_respected(server, tmp_path):
    server.scripts = {"busy": [ok(delay=0.05)]}
    config = make_config(server, {"busy": None}, tmp_path, per_model_per_mode=16,
                         requests={"concurrency": 2, "backoff": 0.01})
    result = generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None)
    assert server.calls["busy"] == 8 and result.report["requests"]["received"] == 8
    assert 1 <= server.max_in_flight <= 2


def test_cache_reuses_received_responses(server, tmp_path):
    server.scripts = {"alpha": [ok()], "flaky": [(500, "", {}, 0)]}
    config = make_config(server, {"alpha": None, "flaky": None}, tmp_path, requests={"retries": 0})
    first = generate_pool(config, tmp_path / "one.jsonl", log=lambda line: None)
    assert first.failures and server.calls == {"alpha": 2, "flaky": 2}
    # Second run, same config: alpha's responses come from the cache; only flaky's failed ones are asked again.
    server.scripts["flaky"] = [ok()]
    second = generate_pool(config, tmp_path / "two.jsonl", log=lambda line: None)
    assert server.calls == {"alpha": 2, "flaky": 4} and not second.failures
    assert second.report["requests"]["cached"] == 2
    assert {t.text for t in first.pool.templates} <= {t.text for t in second.pool.templates}
    # A third run sends nothing at all, even after a torn last line in the cache file.
    with open(tmp_path / "cache.jsonl", "a") as handle:
        handle.write('{"key": "torn')
    third = generate_pool(config, tmp_path / "three.jsonl", log=lambda line: None)
    assert server.calls == {"alpha": 2, "flaky": 4} and third.report["requests"]["cached"] == 4
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "three.jsonl").read_text()
    # A different temperature is a different request.
    hotter = make_config(server, {"alpha": None, "flaky": None}, tmp_path, temperature=0.5)
    generate_pool(hotter, tmp_path / "four.jsonl", log=lambda line: None)
    assert server.calls == {"alpha": 4, "flaky": 6}


def test_paft_rl_pool_generate_command(server, tmp_path, capsys):
    from paft_rl.cli import main as paft_rl_main

    server.scripts = {"alpha": [ok()]}
    config = {"task": TASK, "modes": ["zero_shot"], "per_model_per_mode": 2, "templates_per_request": 2,
              "generators": [{"name": "alpha", "model": "alpha", "base_url": server.url}]}
    (tmp_path / "gen.yaml").write_text(json.dumps(config))
    out = tmp_path / "pool.jsonl"
    assert paft_rl_main(["pool", "generate", "--config", str(tmp_path / "gen.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "requests: 1 (0 cached, 1 received, 0 failed, 0 retries)" in printed and "near_duplicates" in printed
    assert len(read_pool(out)) == 2 and (tmp_path / "pool.cache.jsonl").exists()
    assert paft_rl_main(["pool", "generate", "--config", str(tmp_path / "gen.yaml"), "--out", "pool.csv"]) == 2
    assert "ending in .jsonl" in capsys.readouterr().err


def write_generate_config(tmp_path, server, **overrides) -> str:
    config = {"task": TASK, "modes": ["zero_shot"], "per_model_per_mode": 2, "templates_per_request": 2,
              "generators": [{"name": "alpha", "model": "alpha", "base_url": server.url}], **overrides}
    (tmp_path / "gen.yaml").write_text(json.dumps(config))
    return str(tmp_path / "gen.yaml")


@pytest.mark.parametrize("override, message", [
    (lambda url: {"generators": [{"name": "alpha", "model": "alpha", "base_url": url},
                                 {"name": "beta", "modle": "beta", "base_url": url}]},
     "gen.yaml.generators[1]: unknown key 'modle'; did you mean 'model'?"),
    (lambda url: {"generators": [{"name": "alpha", "model": "alpha", "base_url": url, "backend": "opneai"}]},
     "gen.yaml.generators[0].backend must be one of openai, transformers, vllm, got 'opneai'"),
    (lambda url: {"templates_per_request": 0}, "gen.yaml.templates_per_request must be a positive number, got 0"),
    (lambda url: {"requests": {"timeout": 0}}, "gen.yaml.requests.timeout must be a positive number, got 0"),
    (lambda url: {"filters": {"ngramm": 2}}, "gen.yaml.filters: unknown key 'ngramm'; did you mean 'ngram'?"),
])
def test_bad_config_is_refused_before_any_request(server, tmp_path, capsys, override, message):
    from paft_rl.cli import main as paft_rl_main

    server.scripts = {"alpha": [ok()], "beta": [ok()]}
    config = write_generate_config(tmp_path, server, **override(server.url))
    out = tmp_path / "pool.jsonl"
    assert paft_rl_main(["pool", "generate", "--config", config, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"paft-rl pool: error: {message}\n"
    assert server.calls == {} and not out.exists()


def test_generate_flags_are_honoured_in_both_spellings(server, tmp_path, capsys):
    from paft_rl.cli import main as paft_rl_main

    server.scripts = {"alpha": [ok()]}
    config = write_generate_config(tmp_path, server)
    out, report = tmp_path / "pool.jsonl", tmp_path / "elsewhere" / "r.json"
    assert paft_rl_main(["pool", "generate", "--config", config, "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("1 requests: alpha 1") and server.calls == {} and not out.exists()
    assert paft_rl_main(["pool", "generate", "--config", config, "--out", str(out), "--no_cache", "--quiet",
                         "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert server.calls == {"alpha": 1} and len(read_pool(out)) == 2 and captured.err == ""
    assert json.loads(report.read_text())["requests"]["received"] == 1
    assert not (tmp_path / "pool.cache.jsonl").exists()
    # An earlier pool is replaced only with --force (one rule for every command's output).
    assert paft_rl_main(["pool", "generate", "--config", config, "--out", str(out), "--force"]) == 0
    assert server.calls == {"alpha": 2} and (tmp_path / "pool.cache.jsonl").exists()
    assert "[pool generate]" in capsys.readouterr().err  # progress lines without --quiet
    assert paft_rl_main(["pool", "generate", "--config", config, "--out", str(out), "--no-cache", "--quiet",
                         "--force"]) == 0
    assert server.calls == {"alpha": 3}  # the cache is there but not read


@pytest.mark.parametrize("argv, message", [
    (["--out", "p.jsonl"], "the following arguments are required: --config"),
    (["--config", "{config}", "--out", "p.csv"], "option out 'p.csv': pools are written as JSONL"),
    (["--config", "{config}", "--out", "p.jsonl", "--dry_runn"],
     "command line: unknown option '--dry_runn'; did you mean '--dry_run'?"),
    (["--config", "{config}", "--out", "p.jsonl", "--no-cache", "--cache", "c.jsonl"],
     "option cache cannot be given with --no_cache"),
])
def test_generate_flag_errors_are_one_line(server, tmp_path, capsys, argv, message):
    from paft_rl.cli import main as paft_rl_main

    config = write_generate_config(tmp_path, server)
    argv = [a.format(config=config) for a in argv]
    assert paft_rl_main(["pool", "generate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paft-rl pool: error: {message}") and err.count("\n") == 1
    assert server.calls == {}
