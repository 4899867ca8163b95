"""The decider as a child of ``samtuner run``: ``python -m samtuner.decider_process`` (started by
``samtuner/supervisor.py``, never by hand; ``samtuner streams --role decider`` is the standalone role).

It reads the config as JSON on stdin, dies with its parent, runs the Faust worker, and on a crash
writes the reason to ``--status-fd`` before exiting with code 3 (1 for an infrastructure error).
"""

from __future__ import annotations

import argparse
import os
import sys

from infra.errors import InfraError
from samtuner import memtrace
from samtuner.errors import StreamsCrashed
from samtuner.logs import process_secrets, setup_logging
from samtuner.supervisor import die_with_parent
from schemas.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="samtuner.decider_process")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--faust-log-level", default="warn")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    cfg = Config.model_validate_json(sys.stdin.read())
    setup_logging(args.log_level, cfg.logging.format, process_secrets(cfg))
    memtrace.start_from_env()  # off unless SAMTUNER_TRACEMALLOC names a file
    from samtuner.run import run_roles

    def report(reason: str) -> None:
        with os.fdopen(args.status_fd, "w") as status:
            status.write(reason)

    try:
        run_roles(cfg, frozenset({"decider"}), loglevel=args.faust_log_level)
    except StreamsCrashed as exc:
        report(str(exc))
        return 3
    except InfraError as exc:
        report(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
