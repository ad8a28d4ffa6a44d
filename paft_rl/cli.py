"""``paft-rl`` command line: one subcommand per stage, each in its own module under `paft_rl.commands`.

Every subcommand module exposes ``main(argv: list[str]) -> int``. Bad input raises `UserError` and
becomes one line on stderr with exit status 2; any other exception is a bug and also prints one line
(set ``PAFT_RL_DEBUG=1`` for the traceback). Under a launcher of several processes (``accelerate launch``,
``torchrun``) the line is printed once, by the main process (`say_once`).
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from prompt_pool import UserError, first_line

# name -> (module, one-line help). Modules are imported only when their command runs, so
# `paft-rl pool ...` does not pay for importing torch and TRL.
COMMANDS = {
    "pool": ("paft_rl.commands.pool", "validate, inspect, split, render and generate template pools"),
    "sft": ("paft_rl.commands.sft", "supervised fine-tuning with templates drawn from a pool (PAFT)"),
    "grpo": ("paft_rl.commands.grpo", "GRPO fine-tuning with one pool template per rollout group (PAFT)"),
    "eval": ("paft_rl.commands.eval", "accuracy across many held-out templates, with plots"),
    "select": ("paft_rl.commands.select", "score templates by task loss and pick one (SAPO)"),
    "sequence": ("paft_rl.commands.sequence", "train a sequence of tasks with SAPO selection at each boundary"),
    "pipeline": ("paft_rl.commands.pipeline", "named stages (train, merge, select, evaluate) in one resumable run"),
    "demo": ("paft_rl.commands.demo", "the offline CPU demo (fixed template vs PAFT pool)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: paft-rl COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run `paft-rl COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        print(f"paft-rl {package_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"paft-rl: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        status = int(module.main(rest) or 0)
        if close_process_group():
            leave_distributed_run(status)
        return status
    except UserError as error:
        say_once(f"paft-rl {name}: error: {error}")
        return 2
    except KeyboardInterrupt:
        if not is_other_rank():  # Ctrl-C reaches every process: the main one says it
            print(f"paft-rl {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`paft-rl pool stats | head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # noqa: BLE001 - the CLI never shows a bare traceback
        if os.environ.get("PAFT_RL_DEBUG"):
            raise
        say_once(f"paft-rl {name}: error: {type(error).__name__}: {first_line(error)} (set PAFT_RL_DEBUG=1 for the "
                 "traceback)")
        return 1


# How long a process other than the main one waits before printing an error itself (see `say_once`).
PEER_GRACE_SECONDS = 15.0


def is_other_rank() -> bool:
    """True in a process of a multi-process launch other than the main one (global rank 0)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0


def say_once(message: str) -> None:
    """Print ``message`` on stderr once per launch: now on the main process, after `PEER_GRACE_SECONDS` on others.

    Every process of a launch reads the same input and fails on it the same way; the launcher stops the others
    as soon as one process exits. A process that is not the main one therefore waits first: if the main process
    failed too, the launcher ends this one during the wait and the line is printed once (by the main one, not
    by whichever process got there first); if only this process failed, it still says why.
    """
    if is_other_rank():
        time.sleep(PEER_GRACE_SECONDS)
    print(message, file=sys.stderr)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paft-rl")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def close_process_group() -> bool:
    """Tear down torch.distributed before the interpreter exits; True when a group of several processes was torn down.

    Left to interpreter shutdown, a gloo process group's destructor can abort one rank (SIGABRT) after the run
    has finished and saved, when its peer has already closed the connection.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return False
    distributed.barrier()
    distributed.destroy_process_group()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def leave_distributed_run(status: int) -> None:
    """End a finished rank of a multi-process run now, after Python's exit handlers but before C++ teardown.

    Even with the group destroyed, a rank can still die at interpreter teardown ("terminate called without an
    active exception": a joinable background thread of torch's distributed runtime destroyed at exit), and the
    launcher then reports the whole finished run as failed. Everything Python registered for exit still runs
    (loggers, trackers such as wandb, reward workers); only the native static destructors are skipped.
    """
    import atexit

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
