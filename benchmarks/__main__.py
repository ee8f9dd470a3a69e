"""``python -m benchmarks SUBCOMMAND``: gen, run, report, sendbench, rss, import-time, model (each --help)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("gen", "run", "report", "sendbench", "rss", "import-time", "model")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m benchmarks {{{','.join(commands)}}} [--help]", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "gen":
        from benchmarks.gen import main as gen_main

        return gen_main(rest)
    if cmd == "model":
        from benchmarks.model import main as model_main

        return model_main(rest)
    if cmd == "sendbench":
        from benchmarks.sendbench import main as send_main

        return send_main(rest)
    from benchmarks import harness

    mains = {
        "run": harness.run_main,
        "report": harness.report_main,
        "rss": harness.rss_main,
        "import-time": harness.import_time_main,
    }
    return mains[cmd](rest)


if __name__ == "__main__":
    sys.exit(main())
