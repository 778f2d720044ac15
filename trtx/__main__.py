"""``python -m trtx <command>``."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtx", description="trtx: hand-written TensorRT networks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print the backend, versions, GPUs and what works on this machine, with reasons")
    from trtx.export import cli as export_cli

    export_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from trtx.doctor import main as doctor

        return doctor()
    from trtx_base.errors import UserError

    try:
        return export_cli.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
