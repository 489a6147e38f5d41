"""`python -m minijepa.studies STUDY [options]`: train and evaluate what a study still lacks, print its table and
write it next to the records. Each study module adds its own options (`add_arguments`) and runs itself (`command`)."""
from __future__ import annotations

import argparse

from ..train import ArgumentParser, user_errors
from . import __doc__ as overview
from . import ablations, compare, distractors, regularisers
from .runs import add_run_arguments, plan_from_args

STUDIES = {"ablations": ablations, "compare": compare, "distractors": distractors, "regularisers": regularisers}


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m minijepa.studies", description=overview.split("\n\nIn code:")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="study", required=True, metavar="STUDY", title="studies",
                           help=f"{', '.join(STUDIES)}; `python -m minijepa.studies STUDY --help`: its options")
    for name, module in STUDIES.items():
        s = sub.add_parser(name, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(s)
        add_run_arguments(s)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    plan = plan_from_args(args)
    with user_errors():
        args.command(args, plan)
    if plan.listing is not None:
        print("\n".join(plan.listing))


if __name__ == "__main__":
    main()
