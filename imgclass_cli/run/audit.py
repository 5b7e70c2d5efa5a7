"""`imgclass audit DATA`: every image looked at once -- the decode check prepare and train run, then one pass that
embeds, hashes and measures it -- and the data checks over the results: label issues (confident learning on
out-of-sample probabilities), near-duplicates and leakage, image quality. The result is plain data (audit.json);
report/audit.py shows it and writes issues.csv."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli import __version__, config, files, fs
from imgclass_cli.config import AUDIT_IMAGE_SIZE, AuditConfig, parse_kinds
from imgclass_cli.data import dataset, exclude, findings, holdout, labelissues, neardup, quality
from imgclass_cli.errors import GateFailed, ImgclassError
from imgclass_cli.report import audit as audit_report
from imgclass_cli.report import auditpage


@dataclass
class Audit:
    """What `imgclass audit` found (`report` is audit.json) and wrote."""

    report: dict
    out: str
    written: list[str] = field(default_factory=list)
    failed_gates: list[str] = field(default_factory=list)  # --fail-on kinds that were found

    def enforce_gates(self) -> None:
        """Exit 3 (after the outputs are written and shown) when --fail-on found any of its kinds."""
        if self.failed_gates:
            counts = self.report["counts_by_gate"]
            what = ", ".join(f"{counts[g]} {g}" for g in self.failed_gates)
            raise GateFailed(f"audit gate failed: {what} issue(s) found (--fail-on "
                             f"{','.join(self.report['gates']['fail_on'])})")


@dataclass
class _Images:
    """The audited images in one order (split by split), and what the one pass over them measured."""

    samples: list
    splits: list[str]
    labels: np.ndarray
    embeddings: np.ndarray | None = None
    stats: np.ndarray | None = None
    coarse: np.ndarray | None = None
    fine: np.ndarray | None = None


def audit(data_path: str, cfg: AuditConfig, reporter) -> Audit:
    """Check, embed and audit every image of DATA; write --out (audit.json, issues.csv) and --exclude-list."""
    t0 = time.time()
    fail_on = parse_kinds(cfg.fail_on) if cfg.fail_on else ()
    out = cfg.out or os.path.join("audits", time.strftime("audit-%Y%m%d-%H%M%S"))
    _check_options(cfg, fail_on, out, data_path)
    timings: dict[str, float] = {}
    data = dataset.scan(data_path, val_split=0.0, seed=cfg.seed)
    labelled = bool(cfg.run or cfg.backbone)
    if labelled:
        from imgclass_cli.model import crossfit

        crossfit.check_folds(_images(data).labels, data.class_names, cfg.folds)  # before minutes of decoding
    embedder, size = _embedder(cfg, reporter)
    started = time.time()
    data = _checked(data, cfg, size, reporter)
    images = _images(data)
    if labelled:
        crossfit.check_folds(images.labels, data.class_names, cfg.folds)  # bad files may have been left out
    timings["check"] = time.time() - started
    started = time.time()
    _measure(images, data, embedder, size, cfg, reporter)
    timings["embed" if embedder else "measure"] = time.time() - started
    result = _checks(images, data, embedder, cfg, reporter, timings)
    report = _report(data, images, result, cfg, size, embedder, fail_on, timings)
    report["timings"]["total"] = round(time.time() - t0, 3)
    written = _write(out, cfg, report, data, images, result)
    failed = [g for g in fail_on if report["counts_by_gate"][g]]
    return Audit(report, out, written, failed)


def _check_options(cfg: AuditConfig, fail_on: tuple, out: str, data_path: str) -> None:
    """What fails without reading an image: conflicting options, --out and --exclude-list that may not be written."""
    if cfg.run and cfg.backbone:
        raise ImgclassError("pass --run RUN or --backbone NAME for the embeddings, not both")
    if cfg.run and cfg.image_size:
        raise ImgclassError(f"--image-size: --run {cfg.run} embeds at the run's own image size; leave it out")
    if "label" in fail_on and not (cfg.run or cfg.backbone):
        raise ImgclassError("--fail-on label: the label check needs embeddings; pass --run RUN or --backbone NAME")
    if cfg.run:
        from imgclass_cli.run import rundir

        rundir.read_info(cfg.run)  # a complete run directory, or a clear error
    elif cfg.backbone:
        from imgclass_cli.model.backbones import check_image_size, get_backbone

        spec = get_backbone(cfg.backbone)
        if cfg.image_size:
            check_image_size(spec.name, cfg.image_size)
    dataset.check_root(data_path)
    fs.check_out(out, cfg.force, fs.AUDIT)
    if cfg.exclude_list and not _inside(cfg.exclude_list, out):
        folder = os.path.dirname(os.path.abspath(cfg.exclude_list))
        fs.check_writable(folder)
        mine = fs.owned_files(folder) if os.path.isdir(folder) else set()
        if os.path.lexists(cfg.exclude_list) and os.path.basename(cfg.exclude_list) not in mine:
            raise ImgclassError(f"--exclude-list {cfg.exclude_list}: exists and was not written by imgclass; "
                                "refusing to overwrite it (choose another name or move the file away)")


def _inside(path: str, folder: str) -> bool:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return not (rel == os.curdir or rel.startswith(os.pardir))


def _images(data) -> _Images:
    samples = [s for split in data.splits.values() for s in split]
    splits = [name for name, split in data.splits.items() for _ in split]
    return _Images(samples, splits, np.array([s.label for s in samples], dtype=np.int64))


def _embedder(cfg: AuditConfig, reporter):
    """(the Embedder or None, the decode size). The embedding model computes in --precision (the features; the
    head's output it embeds with stays float32)."""
    if cfg.run or cfg.backbone:
        from imgclass_cli import precision
        from imgclass_cli.model import embeddings

        choice = precision.resolve(cfg.precision)  # a precision this machine lacks fails before any image is read
        reporter.info(choice.line())
    if cfg.run:
        from imgclass_cli.run import rundir

        model, info = rundir.load(cfg.run)
        return embeddings.penultimate(model, info.image_size, f"run {os.path.abspath(cfg.run)}",
                                      policy=choice.policy), info.image_size
    if cfg.backbone:
        emb = embeddings.from_backbone(cfg.backbone, cfg.weights, cfg.image_size, policy=choice.policy)
        return emb, emb.image_size
    reporter.info("label check skipped: it needs embeddings (--run RUN or --backbone NAME)")
    return None, cfg.image_size or AUDIT_IMAGE_SIZE


def _checked(data, cfg: AuditConfig, size: int, reporter):
    """The decode check of prepare and train (verify.screen): bad files skipped with a warning or fatal; the
    decoded images kept when they fit in memory, so the next pass decodes nothing again."""
    from imgclass_cli._tf import tf
    from imgclass_cli.data import verify

    tf()  # imported before the stage's clock starts
    with reporter.stage("checking images", unit="images") as progress:
        return verify.screen(data, cfg.on_bad_image, reporter.warn, min_classes=2, progress=progress,
                             image_size=size)


def _measure(images: _Images, data, embedder, size: int, cfg: AuditConfig, reporter) -> None:
    """One pass over the decoded images: embeddings, quality measures and perceptual hashes of each (the
    feature cache's compute: preallocated arrays, on disk when large). Hashes travel as exact 16-bit chunks."""
    from imgclass_cli._tf import tf
    from imgclass_cli.data import pipeline
    from imgclass_cli.model import feature_cache

    t = tf()
    dim = embedder.dim if embedder else 0
    shapes = [(dim,), (len(quality.MEASURES),), (neardup.VIEWS * 4,), (neardup.VIEWS * 16,)]

    def fn(x):
        emb = embedder.fn(x).numpy() if embedder else np.zeros((int(x.shape[0]), 0), np.float32)
        pixels = x.numpy()
        thumbs = t.image.resize(quality.luma(pixels)[..., None], [neardup.THUMB] * 2, antialias=True).numpy()[..., 0]
        coarse, fine = neardup.hashes(thumbs)
        return [emb, quality.measure(pixels), _chunks(coarse), _chunks(fine)]

    kept = [data.images[s] for s in data.splits if s in data.images]
    pixels = np.concatenate(kept) if kept and data.image_size == size else None
    spec = pipeline.PipelineSpec(size, cfg.batch_size, cfg.seed)
    batches = lambda v: pipeline.build(images.samples, spec, training=False, images=pixels)  # noqa: E731
    with reporter.stage("embedding" if embedder else "measuring", len(images.samples)) as progress:
        cache = feature_cache.build(fn, shapes, batches, len(images.samples), 1, disk_parent=None, progress=progress)
    data.images = {}
    emb, stats, coarse, fine = (np.array(a) for a in cache.arrays)
    cache.close()
    images.embeddings = emb if embedder else None
    images.stats = stats
    images.coarse = _unchunk(coarse.reshape(len(coarse), neardup.VIEWS, 4))
    images.fine = _unchunk(fine.reshape(len(fine), neardup.VIEWS, 4, 4))


def _chunks(h: np.ndarray) -> np.ndarray:
    """uint64 hashes (n, ...) -> (n, ... x 4) float32 holding their 16-bit chunks exactly."""
    parts = [((h >> np.uint64(16 * c)) & np.uint64(0xFFFF)).astype(np.float32) for c in range(4)]
    return np.stack(parts, axis=-1).reshape(len(h), -1)


def _unchunk(chunks: np.ndarray) -> np.ndarray:
    c = chunks.astype(np.uint64)
    return c[..., 0] | (c[..., 1] << np.uint64(16)) | (c[..., 2] << np.uint64(32)) | (c[..., 3] << np.uint64(48))


@dataclass
class _Results:
    found: list
    pairs: np.ndarray
    label: dict | None
    quality_thresholds: dict
    searched: int


def _checks(images: _Images, data, embedder, cfg: AuditConfig, reporter, timings: dict) -> _Results:
    """The three checks over what the pass measured."""
    found, label = [], None
    if embedder is not None:
        started = time.time()
        label_found, label = _label_check(images, data, embedder, cfg, reporter)
        found += label_found
        timings["cross_fit"] = time.time() - started
    started = time.time()
    searchable = ~quality.flat(images.stats)
    pairs = neardup.find_pairs(images.coarse, images.fine, coarse_bits=config.DUP_COARSE_BITS,
                               sure_bits=config.DUP_SURE_BITS, fine_bits=config.DUP_FINE_BITS,
                               ratio=config.DUP_RATIO, searchable=searchable)
    exact = neardup.exact_pairs(holdout.content_keys([s.path for s in images.samples]))
    pairs = neardup.merge_pairs(pairs, exact)
    found += neardup.pair_findings(pairs, images.labels.tolist(), images.splits)
    timings["near_duplicates"] = time.time() - started
    q_found, q_thresholds = quality.quality_issues(images.stats, [s.width for s in images.samples],
                                                   [s.height for s in images.samples])
    found += q_found
    return _Results(found, pairs, label, q_thresholds, int(searchable.sum()))


def _label_check(images: _Images, data, embedder, cfg: AuditConfig, reporter):
    from imgclass_cli.model import crossfit

    k = len(data.class_names)
    with reporter.stage("cross-fitting", cfg.folds, unit="folds") as progress:
        probs = crossfit.out_of_sample_probs(images.embeddings, images.labels, k, folds=cfg.folds, seed=cfg.seed,
                                             progress=progress)
    found, cj = labelissues.label_issues(images.labels, probs)
    info = {
        "embeddings": embedder.source, "dimensions": embedder.dim, "image_size": embedder.image_size,
        "classifier": crossfit.CLASSIFIER, "folds": cfg.folds,
        "seed": cfg.seed, "ranked_by": "self_confidence",
        "out_of_sample_accuracy": round(float((probs.argmax(1) == images.labels).mean()), 6),
        "thresholds": {c: round(float(t), 6) for c, t in zip(data.class_names, cj.thresholds)},
        "confident_joint": cj.joint.tolist(),
    }
    return found, info


def _report(data, images: _Images, result: _Results, cfg: AuditConfig, size: int, embedder, fail_on, timings):
    """audit.json: the settings, every issue and pair, the counts per kind and class, and what to leave out."""
    kinds = parse_kinds(cfg.exclude_kinds)
    paths = [s.path for s in images.samples]
    out_ids = findings.leave_out(result.found, result.pairs, images.labels.tolist(), images.splits, paths, kinds)
    report = _document(
        data_root=os.path.abspath(data.root), class_names=data.class_names, paths=paths, labels=images.labels,
        splits=images.splits, found=result.found, pairs=result.pairs, skipped=data.skipped)
    report.update({
        "imgclass_audit": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "image_size": size,
        "checks": {
            "label": result.label,
            "near_duplicates": {"method": "perceptual hashes of 28 views, multi-index table, ratio test",
                                "coarse_bits": config.DUP_COARSE_BITS, "sure_bits": config.DUP_SURE_BITS,
                                "fine_bits": config.DUP_FINE_BITS, "ratio": config.DUP_RATIO,
                                "searched": result.searched, "pairs": int(len(result.pairs))},
            "quality": {"thresholds": result.quality_thresholds},
        },
        "gates": {"fail_on": list(fail_on), "failed": [g for g in fail_on if report["counts_by_gate"][g]]},
        "leave_out": {"kinds": list(kinds), "paths": [paths[i] for i in out_ids]},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    })
    return report


def _document(*, data_root: str, class_names: list[str], paths: list[str], labels, splits: list[str], found: list,
          pairs, skipped: list) -> dict:
    """The data part of audit.json: images, issues (by kind, highest score first), pairs, groups of copies, counts."""
    labels = [int(x) for x in labels]
    name = lambda i: class_names[labels[i]]  # noqa: E731
    order = {k: n for n, k in enumerate(findings.KINDS)}
    issues = [{
        "path": paths[f.index], "issue": f.kind, "score": f.score, "value": f.value, "given": name(f.index),
        "suggested": class_names[f.suggested] if f.suggested is not None else None,
        "other": paths[f.other] if f.other is not None else None, "split": splits[f.index],
    } for f in sorted(found, key=lambda f: (order[f.kind], -f.score, paths[f.index]))]
    pair_rows = [{"a": paths[a], "b": paths[b], "kind": findings.pair_kind(splits[a], splits[b], labels[a], labels[b]),
                  "distance": int(d), "score": neardup.similarity(d)} for a, b, d in pairs.tolist()]
    roots = findings.groups(len(paths), pairs)
    members: dict[int, list[str]] = {}
    for i in sorted({int(i) for p in pairs.tolist() for i in p[:2]}):
        members.setdefault(int(roots[i]), []).append(paths[i])
    counts = Counter(f.kind for f in found)
    per_class = {k: {c: 0 for c in class_names} for k in findings.KINDS}
    for f in found:
        per_class[f.kind][name(f.index)] += 1
    return {
        "data": data_root,
        "classes": class_names,
        "images": len(paths),
        "splits": dict(Counter(splits)),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "counts": {k: counts.get(k, 0) for k in findings.KINDS},
        "counts_by_gate": {g: sum(counts.get(k, 0) for k in ks) for g, ks in findings.GATE_KINDS.items()},
        "counts_per_class": per_class,
        "issues": issues,
        "pairs": pair_rows,
        "groups": sorted(members.values(), key=lambda g: (-len(g), g)),
    }


def _write(out: str, cfg: AuditConfig, report: dict, data, images: _Images, result: _Results) -> list[str]:
    """--out (audit.json, issues.csv; the exclude list too when it lies inside) in one step, then an exclude list
    elsewhere, recorded in its folder's marker so that a later audit may replace it."""
    written = []
    listing, unfit = exclude.write(data.root, report["leave_out"]["paths"])
    report["leave_out"]["unwritable"] = unfit
    inside = cfg.exclude_list and _inside(cfg.exclude_list, out)
    page = auditpage.page(report, _thumbnails(auditpage.paths_shown(report, cfg.gallery)), cfg.gallery,
                          title=f"imgclass audit {data.root}")
    with fs.staged(out, cfg.force, fs.AUDIT) as tmp:
        fs.write_json_atomic(os.path.join(tmp, files.AUDIT_JSON), report)
        fs.write_text_atomic(os.path.join(tmp, files.AUDIT_ISSUES), audit_report.issues_csv(report))
        fs.write_text_atomic(os.path.join(tmp, files.AUDIT_HTML), page)
        if inside:
            target = os.path.join(tmp, os.path.relpath(os.path.abspath(cfg.exclude_list), os.path.abspath(out)))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.write_bytes_atomic(target, listing)
    written += [os.path.join(out, name) for name in files.AUDIT_FILES]
    if cfg.exclude_list:
        if not inside:
            folder = os.path.dirname(os.path.abspath(cfg.exclude_list))
            os.makedirs(folder, exist_ok=True)
            fs.write_bytes_atomic(cfg.exclude_list, listing)
            fs.record(folder, [cfg.exclude_list])
        written.append(cfg.exclude_list)
    return written


def _thumbnails(paths: list[str]) -> dict:
    """{path: (PNG bytes or None, why not)}: each image upright (EXIF orientation applied), 96-160 px on its
    longer side, for audit.html. A record of a TFRecord folder is not a file to read: its card names it only."""
    from imgclass_cli.report import overlays
    from imgclass_cli.run.explain import read_picture

    out = {}
    for path in paths:
        try:
            upright = read_picture(path, 8).upright
        except ImgclassError as e:
            out[path] = (None, f"no picture: {e.message}")
            continue
        h, w = overlays.display_size(*upright.shape[:2], smallest=96, largest=160)
        out[path] = (overlays.png(overlays.resized(upright, h, w)), "")
    return out
