"""``python -m infra.local up|down``: the local stand-ins without the s3ddb CLI.

``up`` prints ``export`` lines on stdout (everything else goes to stderr), so::

    eval "$(python -m infra.local up --dir .s3ddb/ci --dynamodb-port 0 --s3-port 0 --lambda-port 0)"
    python -m infra.local down --dir .s3ddb/ci
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.local import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start (or reuse) the services; print export lines")
    p_down = sub.add_parser("down", help="stop the services recorded in the state dir")
    for p in (p_up, p_down):
        p.add_argument(
            "--dir",
            type=Path,
            default=None,
            help="state dir (pid files, logs); default $S3DDB_LOCAL_DIR or ~/.s3ddb/local",
        )
    p_up.add_argument("--dynamodb-port", type=int, default=8000, help="0 picks a free port (default 8000)")
    p_up.add_argument("--s3-port", type=int, default=4566, help="0 picks a free port (default 4566)")
    p_up.add_argument(
        "--lambda-port",
        type=int,
        default=stack.DEFAULT_LAMBDA_PORT,
        help=f"0 picks a free port (default {stack.DEFAULT_LAMBDA_PORT})",
    )
    p_up.add_argument(
        "--lambda-timeout",
        type=float,
        default=stack.DEFAULT_LAMBDA_TIMEOUT_S,
        help="the emulated function's timeout in seconds (default 900)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            services = stack.up(
                state_dir=args.dir,
                dynamodb_port=args.dynamodb_port,
                s3_port=args.s3_port,
                lambda_port=args.lambda_port,
                lambda_timeout=args.lambda_timeout,
            )
            sys.stdout.write(stack.format_exports(services.env))
        else:
            stopped = stack.down(state_dir=args.dir)
            print(f"s3ddb local: stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
    except RuntimeError as exc:
        print(f"s3ddb local: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
