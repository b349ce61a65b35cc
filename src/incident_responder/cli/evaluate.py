"""``eval``: dedup and retrieval quality on a labelled set, in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from incident_responder.cli.common import app
from incident_responder.logs import configure_logging


@app.command("eval")
def evaluate_command(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="eval data dir")],
    out: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    only: Annotated[str, typer.Option(help="all | dedup | runbooks")] = "all",
    limit: Annotated[int, typer.Option(help="first N reports per service (0: all)")] = 0,
    learning_curve: Annotated[
        str | None,
        typer.Option(
            "--learning-curve",
            help="also replay dedup once per budget (e.g. 0,1,5,20) while a simulated person "
            "corrects the first K wrong decisions (merge or split), and print F1/GA after each",
        ),
    ] = None,
) -> None:
    """Measure dedup and runbook retrieval on an eval dir (dedup.jsonl, runbooks/, runbook_queries.jsonl)."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from incident_responder.evaluation import evaluate

    if only not in ("all", "dedup", "runbooks"):
        raise typer.BadParameter("--only must be all, dedup or runbooks")
    budgets = _budgets(learning_curve) if learning_curve is not None else []
    configure_logging("warning", "console")
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def tick(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        report = asyncio.run(evaluate(directory, only=only, limit=limit, progress=tick))

    if report.dedup_per_service:
        table = Table(title="dedup per service")
        for col in ("service", "reports", "groups", "tickets", "precision", "recall", "F1", "GA"):
            table.add_column(col, justify="right" if col != "service" else "left")
        for name, s in sorted(report.dedup_per_service.items()):
            table.add_row(
                name, str(s.reports), str(s.true_groups), str(s.tickets),
                f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", f"{s.ga:.4f}",
            )  # fmt: skip
        m = report.macro()
        table.add_row(
            "macro",
            "",
            "",
            "",
            f"{m['precision']:.4f}",
            f"{m['recall']:.4f}",
            f"{m['f1']:.4f}",
            f"{m['ga']:.4f}",
        )
        Console().print(table)
    if report.retrieval:
        table = Table(title="runbook retrieval")
        for col in ("queries", "variant", "R@1", "R@3", "MRR"):
            table.add_column(col)
        for variant, r in report.retrieval.items():
            table.add_row(
                str(r.queries), variant, f"{r.recall_at_1:.4f}", f"{r.recall_at_3:.4f}", f"{r.mrr:.4f}"
            )
        Console().print(table)
    summary = report.to_json()
    if budgets:
        from incident_responder.evaluation import learning_curve as curve

        points = asyncio.run(curve(directory, budgets, limit=limit))
        table = Table(title="learning curve: F1/GA after a person corrects the first K wrong decisions")
        for col in ("K", "corrections made", "F1", "GA"):
            table.add_column(col, justify="right")
        for p in points:
            table.add_row(str(p.budget), str(p.corrections), f"{p.f1:.4f}", f"{p.ga:.4f}")
        Console().print(table)
        summary["learning_curve"] = [
            {**{k: v for k, v in vars(p).items() if k != "per_service"},
             "per_service": {s: vars(g) for s, g in p.per_service.items()}}
            for p in points
        ]  # fmt: skip
    if out is not None:
        out.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    typer.echo(report.last_line())


def _budgets(text: str) -> list[int]:
    try:
        budgets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("--learning-curve takes comma-separated counts, e.g. 0,1,5,20") from None
    if not budgets or any(b < 0 or b > 10_000 for b in budgets):
        raise typer.BadParameter("--learning-curve counts must be between 0 and 10000")
    return budgets
