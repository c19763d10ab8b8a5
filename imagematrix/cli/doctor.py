"""`build.py doctor`: diagnose this Python environment (or an image) against the matrix, rules and GPU."""

from __future__ import annotations

import sys

from imagematrix.assist import doctor
from imagematrix.cli.common import err, matrix_option, out
from imagematrix.model import matrix as matrix_mod
from imagematrix.model import secrets


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("--image", help="diagnose this image instead of the current Python")
    p.add_argument("--gpus", action="store_true", help="with --image: run it with `--gpus all`")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    if args.image is not None:
        doctor.check_image_ref(args.image)
    with err.status("probing " + (args.image or sys.executable)):
        facts = doctor.probe_image(args.image, args.gpus) if args.image else doctor.probe_here()
    report = doctor.analyse(m, facts)
    if args.json:
        print(secrets.redact_text(report.as_json()))
    else:
        for line in doctor.lines(report):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 1 if report.findings else 0
