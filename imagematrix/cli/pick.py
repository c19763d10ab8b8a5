"""`build.py pick`: the best image for a GPU, driver and version wishes, whether its tag is published, and why the
others are out."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from imagematrix.assist import pick
from imagematrix.cli.common import checked, err, matrix_option, out
from imagematrix.knowledge import gpus
from imagematrix.model import fields, tags
from imagematrix.model import matrix as matrix_mod


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("--gpu", help="GPU model or capability: A100, H100, T4, sm_75, 8.6, ...")
    p.add_argument("--driver", help="NVIDIA driver version as nvidia-smi prints it, e.g. 535.104.05")
    p.add_argument("--vllm", help="vLLM version or specifier, e.g. 0.10.0 or '>=0.8'")
    p.add_argument("--verl", help="verl version or specifier, e.g. 0.5 (any 0.5.x) or '>=0.4'")
    p.add_argument("--registry", default=tags.DEFAULT_REGISTRY, type=checked(fields.check_registry),
                   help=f"host[:port]/namespace for the pull line, asked whether the tag is published "
                        f"(default: the embedded {tags.DEFAULT_REGISTRY})")
    p.add_argument("--only-published", action="store_true",
                   help="choose the best row whose tag is published in the registry; exit 1 when none is, or when "
                        "the registry cannot be asked")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    result = pick.pick(m, args.gpu, args.driver, args.vllm, args.verl)
    if result.excluded:
        table = Table("row", "left out because", title="other rows")
        for row_id, reasons in result.excluded.items():
            table.add_row(row_id, escape("; ".join(reasons)))
        out.print(table)
    if result.best is None:
        err.print("[red]no row fits[/]: see the reasons above (an older driver needs a row with an older CUDA; "
                  "an older GPU needs a torch built for its architecture)")
        return 1
    host = gpus.host_platform(args.gpu) if args.gpu else None  # a Grace GPU: published = the index has arm64
    pub = pick.publication(result, args.registry, only_published=args.only_published, platform=host)
    if pub.problem:
        err.print(f"cannot ask the registry whether the tag is published: {escape(pub.problem)}", soft_wrap=True)
    best = pub.choice or result.best
    label = "best" if best is result.best else "best published"
    out.print(f"{label}: [bold]{best.row.id}[/] (vLLM {best.row.vllm}, verl {best.row.verl}, torch {best.row.torch}, "
              f"CUDA {best.row.cuda})")
    if best is not result.best:  # --only-published passed over better rows
        skipped = [row_id for row_id, found in pub.checked.items() if not found]
        out.print(f"  fit better, not published in {args.registry}: {', '.join(skipped)}", highlight=False)
    for note in best.notes:
        out.print(f"  note: {escape(note)}")
    others = [c.row.id for c in result.candidates if c is not best]
    if others:
        out.print(f"  also fits: {', '.join(others)}")
    if pub.choice is None:  # --only-published, and no fitting row is published
        err.print(f"[red]nothing published fits[/]: {escape(pick.none_published_line(result, pub))}", soft_wrap=True)
        return 1
    out.print(pick.pull_line(tags.repository(args.registry), best.row), highlight=False)
    out.print(f"  {escape(pick.publication_line(pub))}", highlight=False)
    if pick.platforms_line(best.row):
        out.print(f"  {pick.platforms_line(best.row)}", highlight=False)
    verify = pick.verify_line(tags.repository(args.registry), best.row, pub.signed if pub.choice is best else None)
    if verify:
        out.print(verify, highlight=False)
    if args.only_published and pub.published is None:
        err.print("[red]publication unknown[/]: --only-published needs an answer from the registry", soft_wrap=True)
        return 1
    return 0
