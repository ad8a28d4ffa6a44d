"""One module per ``paft-rl`` subcommand, each with ``main(argv) -> int``."""
