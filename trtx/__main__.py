"""``python -m trtx <command>``."""

import sys

from trtx_base import cli as base_cli


def main(argv: list[str] | None = None) -> int:
    parser = base_cli.ArgumentParser(prog="python -m trtx", description="trtx: hand-written TensorRT networks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print the backend, versions, GPUs and what works on this machine, with reasons")
    from trtx.export import cli as export_cli

    export_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from trtx.doctor import main as doctor

        return base_cli.run(doctor)
    return base_cli.run(lambda: export_cli.run(args))


if __name__ == "__main__":
    sys.exit(main())
