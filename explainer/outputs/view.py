"""The terminal view of one image's result (rich)."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from explainer.outputs.names import printable


def render_report(report) -> Panel:
    parts = []
    if report.verdict is None:
        verdict = Text("verdict unknown (no classifier checkpoint: treated as suspect)", style="yellow")
    else:
        style = "bold red" if report.verdict == "fake" else "bold green"
        verdict = Text(f"{report.verdict.upper()}  P(fake) = {report.p_fake:.2f}", style=style)
        if any("classifier weights are untrained" in n for n in report.notes):
            verdict = Text(f"{report.verdict.upper()}?  P(fake) = {report.p_fake:.2f} (untrained classifier: meaningless)",
                           style="yellow")
    parts.append(verdict)
    facts = []
    if report.obj:
        facts.append(f"class: {report.obj}")
    if report.region:
        facts.append(f"region: {report.region}")
    facts.append(f"box: {tuple(report.roi_box)}" if report.roi_box else "box: none")
    parts.append(Text("  ".join(facts), style="dim"))
    if getattr(report, "regions", None):
        from explainer.engine.regions import describe

        parts.append(Text("regions: " + "; ".join(printable(describe(n, r)) for n, r in report.regions.items()),
                          style="dim"))
    if report.findings:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("artifact", style="green")
        table.add_column("explanation")
        for f in report.findings:
            table.add_row(Text(f["artifact"]), Text(f["explanation"]))  # Text: tree strings are not markup
        parts.append(table)
    elif report.skipped:
        parts.append(Text(report.skipped, style="yellow"))
    else:
        parts.append(Text("no artifacts found", style="bold"))
    if report.questions:
        q = Table(show_header=True, header_style="dim", box=None, pad_edge=False)
        for col in ("round", "question", "answer", "P(yes)"):
            q.add_column(col, style="dim" if col != "answer" else "")
        for item in report.questions:
            if item.get("p_yes") is not None:
                p = f"{item['p_yes']:.2f}"
            elif item["kind"] == "probe":
                p = "measured " + (f"{item['value']:.3g}" if item.get("value") is not None else "n/a")
            else:
                p = "inferred" if item["kind"] == "inferred" else item["kind"]
            q.add_row(str(item["round"]), Text(item["node_id"]), Text(str(item["answer"])), p)
        parts.append(q)
    timing = "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in report.timings.items() if not k.startswith("detector_"))
    if timing:
        parts.append(Text(timing, style="dim"))
    for note in report.notes:
        parts.append(Text(f"note: {printable(note)}", style="dim yellow"))
    return Panel(Group(*parts), title=Text(printable(report.file)), title_align="left")
