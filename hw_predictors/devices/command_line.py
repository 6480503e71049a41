"""``python -m nni_bigLittle.hw_predictors.devices rebuild --data ../shared/data/latency`` | ``list``."""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from nni_bigLittle.hw_predictors.devices.fit_report import format_fit_report
from nni_bigLittle.hw_predictors.devices.lookup import BUNDLED_DIR, list_bundled
from nni_bigLittle.hw_predictors.devices.rebuild import rebuild_bundled


# ============================================================================================ command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nni_bigLittle.hw_predictors.devices rebuild --data ../shared/data/latency`` | ``list``."""
    parser = argparse.ArgumentParser(prog='python -m nni_bigLittle.hw_predictors.devices')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('rebuild', help='refit the bundled predictors from the data folder')
    p.add_argument('--data', required=True)
    p.add_argument('--out', default=None)
    p.add_argument('--only', action='append')
    p.add_argument('--quiet', action='store_true')
    sub.add_parser('list', help='bundled predictors')
    args = parser.parse_args(argv)
    if args.command == 'rebuild':
        reports = rebuild_bundled(args.data, out_dir=args.out or BUNDLED_DIR, names=args.only, progress=not args.quiet)
        print(format_fit_report(reports))
    else:
        for row in list_bundled():
            print(json.dumps(row))
    return 0
