"""audit.html: the audit on one self-contained page (report/html.py, as evaluate's report.html) -- what was found
per kind and class, how each check was run, and a gallery per kind found, best examples first, near-duplicate
pairs side by side. Reads audit.json's plain data and the thumbnails the caller read; never an image itself."""

from __future__ import annotations

from imgclass_cli.config import AUDIT_KINDS as KINDS
from imgclass_cli.config import AUDIT_PAIR_KINDS as PAIR_KINDS
from imgclass_cli.report import html
from imgclass_cli.report.audit import gallery as gallery_entries

# What each kind means, shown above its gallery (the thresholds are in audit.json and the guide).
MEANING = {
    "label": "the label is probably wrong: out-of-sample probabilities (cross-fitted on embeddings) put the image "
             "confidently in another class (confident learning); the score is 1 minus its given class's probability",
    "leak": "the same picture in two splits: it inflates every metric measured on the later split",
    "conflict": "the same picture filed under two classes",
    "duplicate": "the same picture twice in one class and split",
    "dark": "nearly black", "bright": "nearly white or blown out", "low_contrast": "low contrast",
    "blurry": "blurry (low variance of the Laplacian)", "tiny": "smaller than a useful input",
    "aspect_ratio": "an extreme aspect ratio", "grayscale": "grayscale in a colour dataset",
}


def anchor(kind: str) -> str:
    return "kind-" + kind.replace("_", "-")


def _counts(report: dict) -> html.Section:
    """Issues per kind (rows, linking to their gallery) and class (columns)."""
    classes = list(report["classes"])
    per_class = report["counts_per_class"]
    rows = []
    for kind in KINDS:
        n = report["counts"].get(kind, 0)
        label = html.Link(kind, anchor(kind)) if n else kind
        rows.append([label, *[per_class[kind].get(c, 0) for c in classes], n])
    return html.Section("Issues per kind and class", [html.Table(["issue", *classes, "total"], rows)], anchor="counts")


def _checks(report: dict) -> html.Section:
    checks = report["checks"]
    label = checks.get("label")
    rows = []
    if label is None:
        rows.append(["label", "skipped: pass --run RUN or --backbone NAME"])
    else:
        rows.append(["label", f"{label['folds']}-fold cross-fitting of {label['classifier']} on {label['embeddings']}"
                              f" ({label['dimensions']} dimensions); out-of-sample accuracy "
                              f"{label['out_of_sample_accuracy']:.4f}"])
    dup = checks["near_duplicates"]
    rows.append(["near-duplicates", f"{dup['method']}: {dup['pairs']} pair(s) among {dup['searched']} images"])
    rows.append(["quality", ", ".join(f"{k} {v}" for k, v in checks["quality"]["thresholds"].items())])
    leave = report["leave_out"]
    rows.append(["leave out", f"{len(leave['paths'])} image(s) for the kinds {', '.join(leave['kinds'])} "
                              "(imgclass audit --exclude-list)"])
    return html.Section("How it was checked", [html.Table(["check", "how"], rows)], anchor="checks")


def _card(kind: str, entry: dict, pictures: dict, where: dict) -> html.Card:
    """One image, or a pair side by side; under them what the audit says, then each image's class, split and path."""
    images = []
    if kind in PAIR_KINDS:
        lines = [f"{kind}: similarity {entry['score']:.2f}"]
    else:
        lines = [entry["caption"]]
    for path in entry["paths"]:
        png, note = pictures.get(path, (None, "no picture"))
        if png is not None:
            images.append(html.Image(png, alt=path))
        given, split = where.get((kind, path), (None, None))
        lines.append(" ".join(x for x in (f"{given}, {split}:" if given else "", path, note) if x))
    return html.Card(images, lines)


def _galleries(report: dict, pictures: dict, per_kind: int) -> list[html.Section]:
    entries = gallery_entries(report, per_kind)
    where = {(i["issue"], i["path"]): (i["given"], i["split"]) for i in report["issues"]}
    sections = []
    for kind in KINDS:
        shown = entries.get(kind)
        if not shown:
            continue
        n = report["counts"][kind]
        if kind in PAIR_KINDS:
            pairs = len({tuple(sorted((i["path"], i["other"]))) for i in report["issues"] if i["issue"] == kind})
            told = f"{len(shown)} of {pairs} pair(s) shown ({n} images)"
        else:
            told = f"{len(shown)} of {n} image(s) shown"
        blocks = [html.Paragraph(f"{MEANING.get(kind, kind)}. {told}, the highest scores first.", muted=True),
                  html.Gallery([_card(kind, e, pictures, where) for e in shown])]
        sections.append(html.Section(f"{kind} ({n})", blocks, anchor=anchor(kind)))
    if not sections:
        sections.append(html.Section("Gallery", [html.Paragraph("no issue found", muted=True)], anchor="gallery"))
    return sections


def _skipped(report: dict) -> html.Section | None:
    if not report.get("skipped"):
        return None
    rows = [[s["path"], s["reason"]] for s in report["skipped"]]
    return html.Section("Files that are not readable images", [html.Table(["path", "reason"], rows)],
                        anchor="skipped")


def paths_shown(report: dict, per_kind: int) -> list[str]:
    """Every image the page shows: what the caller reads thumbnails of."""
    entries = gallery_entries(report, per_kind)
    return list(dict.fromkeys(p for shown in entries.values() for e in shown for p in e["paths"]))


def page(report: dict, pictures: dict, per_kind: int, title: str = "imgclass audit") -> str:
    """audit.html as a string. pictures: {path: (PNG bytes or None, why not)} for paths_shown()."""
    splits = ", ".join(f"{n} {s}" for s, n in sorted(report.get("splits", {}).items()))
    subtitle = [f"{report['images']:,} images, {len(report['classes'])} classes" + (f" ({splits})" if splits else ""),
                f"data: {report['data']}"]
    if per_kind == 0:
        gallery = [html.Section("Gallery", [html.Paragraph("no gallery (--gallery 0)", muted=True)], anchor="gallery")]
    else:
        gallery = _galleries(report, pictures, per_kind)
    sections = [_counts(report), _checks(report), *gallery, _skipped(report)]
    return html.render(html.Page(title, [s for s in sections if s is not None], subtitle))
