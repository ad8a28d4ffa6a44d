"""``paft-rl pool generate``: build a template pool with an ensemble of LLMs (PAFT phase 1).

`main` takes the arguments after ``pool generate`` (a leading ``generate`` is accepted too) and returns
the exit status: 0 when every generator succeeded, 1 when some failed (the pool made by the others is
still written, and the failures are listed). Bad input raises `UserError` before any request is sent.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from prompt_pool.io import atomic_write_text

from ..outputs import check_output, refuse_replacing
from ..settings import SettingError, Settings, option, parse_settings, settings_parser
from .config import load_config
from .prompts import build_requests
from .run import cache_location, default_report_path, generate_pool, report_text


@dataclass
class GenerateFlags(Settings):
    """The command line of ``paft-rl pool generate``; the run itself is described by the ``--config`` file."""

    config: str = option(help="generate config (YAML): task, seed templates, generators")
    out: str = option(help="pool file to write (JSONL)")
    report: str | None = option(None, help="report file (JSON); default: <out stem>.report.json")
    cache: str | None = option(None, help="response cache (JSONL); default: the config's 'cache' or "
                                          "<out stem>.cache.jsonl")
    no_cache: bool = option(False, help="neither read nor write a response cache")
    dry_run: bool = option(False, help="print the requests and one meta-prompt per mode; send nothing")
    quiet: bool = option(False, help="no progress lines")
    force: bool = option(False, help="replace the pool and report an earlier run wrote (a rerun to retry failed "
                                     "generators: received responses are cached)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.out.endswith(".jsonl"):
            raise SettingError("out", f"{self.out!r}: pools are written as JSONL; give a file name ending in .jsonl")
        if self.no_cache and self.cache is not None:
            raise SettingError("cache", "cannot be given with --no_cache: give one of them")


def parse_flags(argv: list[str]) -> GenerateFlags:
    """The flags after ``pool generate``, as one-line errors when wrong."""
    (flags,) = parse_settings(settings_parser(GenerateFlags, "paft-rl pool generate"), argv)
    return flags


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        argv = argv[1:]
    flags = parse_flags(argv)
    config = load_config(flags.config)
    if flags.dry_run:
        return _dry_run(config)
    cache = "" if flags.no_cache else flags.cache
    report_path = Path(flags.report) if flags.report else default_report_path(flags.out)
    check_outputs(flags, report_path, cache_location(config, flags.out, cache))
    log = (lambda line: None) if flags.quiet else None
    result = generate_pool(config, flags.out, cache_path=cache, log=log)
    atomic_write_text(report_path, json.dumps(result.report, indent=2, ensure_ascii=False) + "\n")
    print(report_text(result.report))
    print(f"pool: {flags.out}\nreport: {report_path}")
    if result.failures:
        print("paft-rl pool generate: some generators failed; the pool holds what the others made "
              "(re-run with --force to retry: received responses are cached):", file=sys.stderr)
        for line in result.failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def check_outputs(flags: GenerateFlags, report: Path, cache: Path | None) -> None:
    """Before any request: the pool, report and cache files can be written, and an earlier run's pool and report
    are replaced only with --force (the cache is meant to be read again)."""
    check_output(flags.out, "--out", "file")
    check_output(report, "--report", "file")
    if cache is not None:
        check_output(cache, "--cache", "file")
    held = [path.name for path in (Path(flags.out), report) if path.exists()]
    refuse_replacing(flags.out, "--out", held, flags.force)


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
