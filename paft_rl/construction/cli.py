"""``paft-rl pool generate``: build a template pool with an ensemble of LLMs (PAFT phase 1).

`main` takes the arguments after ``pool generate`` (a leading ``generate`` is accepted too) and returns
the exit status: 0 when every generator succeeded, 1 when some failed (the pool made by the others is
still written, and the failures are listed). Bad input raises `UserError` before any request is sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prompt_pool.errors import UserError
from prompt_pool.io import atomic_write_text

from .config import load_config
from .prompts import build_requests
from .run import default_report_path, generate_pool, report_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paft-rl pool generate",
        description="Generate a pool of instruction templates with an ensemble of LLMs in few-shot and zero-shot "
                    "modes, filter it, split it into train and held-out, and write it as JSONL.")
    parser.add_argument("--config", required=True, help="generate config (YAML): task, seed templates, generators")
    parser.add_argument("--out", required=True, help="pool file to write (JSONL)")
    parser.add_argument("--report", help="report file (JSON); default: <out stem>.report.json")
    parser.add_argument("--cache", help="response cache (JSONL); default: the config's 'cache' or <out stem>.cache.jsonl")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write a response cache")
    parser.add_argument("--dry-run", action="store_true", help="print the requests and one meta-prompt per mode; send nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    if not str(args.out).endswith(".jsonl"):
        raise UserError(f"--out {args.out!r}: pools are written as JSONL; give a file name ending in .jsonl")
    config = load_config(args.config)
    if args.dry_run:
        return _dry_run(config)
    cache = "" if args.no_cache else args.cache
    log = (lambda line: None) if args.quiet else None
    result = generate_pool(config, args.out, cache_path=cache, log=log)
    report_path = Path(args.report) if args.report else default_report_path(args.out)
    atomic_write_text(report_path, json.dumps(result.report, indent=2, ensure_ascii=False) + "\n")
    print(report_text(result.report))
    print(f"pool: {args.out}\nreport: {report_path}")
    if result.failures:
        print("paft-rl pool generate: some generators failed; the pool holds what the others made "
              "(re-run to retry: received responses are cached):", file=sys.stderr)
        for line in result.failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _dry_run(config) -> int:
    requests = build_requests(config)
    per_generator = {g.name: sum(r.generator == g.name for r in requests) for g in config.generators}
    print(f"{len(requests)} requests: " + ", ".join(f"{name} {count}" for name, count in per_generator.items()))
    shown = set()
    for request in requests:
        if request.mode not in shown:
            shown.add(request.mode)
            print(f"\n===== {request.mode} (generator {request.generator}, sample {request.sample}) =====")
            for message in request.messages:
                print(f"--- {message['role']}\n{message['content']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
