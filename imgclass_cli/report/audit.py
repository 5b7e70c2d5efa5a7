"""How an audit looks: issues.csv, the summary on stdout (a table of issues per kind and class, or audit.json, or
issues.csv), and the gallery entries a page shows per kind. Everything here reads audit.json's plain data."""

from __future__ import annotations

import json
import sys

from rich.table import Table

from imgclass_cli import fs
from imgclass_cli.config import AUDIT_KINDS as KINDS
from imgclass_cli.config import AUDIT_PAIR_KINDS as PAIR_KINDS
from imgclass_cli.report.output import escape, stdout

ISSUE_COLUMNS = ["path", "issue", "score", "given", "suggested", "other", "value", "split"]


def issues_csv(report: dict) -> str:
    """issues.csv: one row per image and issue, in audit.json's order."""
    rows = [{k: ("" if issue.get(k) is None else issue[k]) for k in ISSUE_COLUMNS} for issue in report["issues"]]
    return fs.rows_to_csv(rows, ISSUE_COLUMNS)


def print_audit(report: dict, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        sys.stdout.write(issues_csv(report))
    else:
        con = stdout()
        con.print(counts_table(report))
        con.print(checks_table(report))


def counts_table(report: dict) -> Table:
    """Issues per kind (rows) and class (columns): the kinds found, or a row saying there were none."""
    classes = report["classes"]
    t = Table(title=escape(f"audit of {report['data']}: {report['images']} images"))
    t.add_column("issue")
    for c in classes:
        t.add_column(escape(c), justify="right")
    t.add_column("total", justify="right")
    for kind in KINDS:
        n = report["counts"][kind]
        if n:
            t.add_row(kind, *(str(report["counts_per_class"][kind][c]) for c in classes), str(n))
    if not any(report["counts"].values()):
        t.add_row("none", *("0" for _ in classes), "0")
    return t


def checks_table(report: dict) -> Table:
    checks = report["checks"]
    t = Table(title="checks", show_header=False)
    t.add_column("check")
    t.add_column("result")
    label = checks["label"]
    if label is None:
        t.add_row("label", "skipped: pass --run RUN or --backbone NAME")
    else:
        t.add_row("label", escape(f"{report['counts']['label']} flagged; {label['folds']}-fold out-of-sample "
                                  f"accuracy {label['out_of_sample_accuracy']:.4f} on {label['embeddings']}"))
    dup = checks["near_duplicates"]
    by = {k: report["counts"][k] for k in PAIR_KINDS}
    t.add_row("near-duplicates", f"{dup['pairs']} pair(s) among {dup['searched']} images: " +
              ", ".join(f"{n} {k}" for k, n in by.items()) + " (images)")
    t.add_row("quality", f"{report['counts_by_gate']['quality']} issue(s)")
    t.add_row("leave out", f"{len(report['leave_out']['paths'])} image(s) ({','.join(report['leave_out']['kinds'])})")
    if report["skipped"]:
        t.add_row("skipped", f"{len(report['skipped'])} unreadable file(s)")
    return t


def gallery(report: dict, per_kind: int = 24) -> dict[str, list[dict]]:
    """What a page shows of each kind found, best examples first: for a pair both images side by side (each pair
    once), else the image; with a caption (the given and suggested label, the score). Plain data for a renderer
    (report/audit_page.py) that embeds a thumbnail of every path named here."""
    out: dict[str, list[dict]] = {}
    seen_pairs = set()
    for issue in report["issues"]:
        kind = issue["issue"]
        entries = out.setdefault(kind, [])
        if len(entries) >= per_kind:
            continue
        if kind in PAIR_KINDS:
            key = tuple(sorted((issue["path"], issue["other"])))
            if key in seen_pairs:
                continue
            seen_pairs.add(key)
            caption = f"{kind}: {issue['given']} / {issue['split']} ~ similarity {issue['score']:.2f}"
            entries.append({"paths": list(key), "score": issue["score"], "caption": caption})
        else:
            what = f"{issue['given']} -> {issue['suggested']}" if kind == "label" else issue["given"]
            entries.append({"paths": [issue["path"]], "score": issue["score"],
                            "caption": f"{kind}: {what} (score {issue['score']:.2f})"})
    return out
