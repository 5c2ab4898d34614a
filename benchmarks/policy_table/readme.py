"""Copying the report's main tables into a README, between markers, so it never shows numbers the
committed cells do not hold."""

from __future__ import annotations

from pathlib import Path


README_BEGIN, README_END = "<!-- policy-table:begin -->", "<!-- policy-table:end -->"


def readme_markers(test_turns: str = "all") -> tuple[str, str]:
    """The README markers a table is copied between: one pair per test-turn rule, so tables made
    on different test sets sit side by side and each refresh touches only its own."""
    if test_turns == "all":
        return README_BEGIN, README_END
    return f"<!-- policy-table:{test_turns}:begin -->", f"<!-- policy-table:{test_turns}:end -->"


def splice_readme(readme: Path, table_md: Path, test_turns: str = "all") -> None:
    """Replace what lies between the README's markers for ``test_turns`` with the report's main and
    ablation tables, so the README never shows numbers the committed cells do not hold."""
    begin, end_marker = readme_markers(test_turns)
    text, report = readme.read_text(), table_md.read_text()
    if begin not in text or end_marker not in text:
        raise ValueError(f"{readme} has no {begin} ... {end_marker} markers to write the table between")
    parts = []
    for title in ("## Main table", "## Ablations", "## Combination rule"):
        if title not in report:
            continue  # the rule section appears once one of its cells is done
        start = report.index(title)
        end = report.index("\n## ", start + 1)
        parts.append(report[start:end].strip().replace("## ", "#### ", 1))
    note = ("ROUGE-1 in points (x100) and test answer loss (nats/token), mean ± std over the seeds done (n); "
            "copied from `table.md` by `--report --readme README.md`.")
    head, rest = text.split(begin, 1)
    tail = rest.split(end_marker, 1)[1]
    readme.write_text(head + begin + "\n" + note + "\n\n" + "\n\n".join(parts) + "\n" + end_marker + tail)
