"""prepare SRC OUT: look at every file of SRC once, split it, and write OUT (links, manifest.csv, prepare.json)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

from imgclass_cli import files, fs
from imgclass_cli.config import DEFAULT_HOLDOUT, MAX_IMAGE_PIXELS, SMALL_IMAGE_SIDE, PrepareConfig
from imgclass_cli.data import dataset, folders, holdout, manifest, tfrecord, verify
from imgclass_cli.data.imagefile import FileInfo
from imgclass_cli.errors import ImgclassError, first_line

SPLITS = ("train", "val", "test")


@dataclass
class Entry:
    """One file found under SRC."""

    source: str  # relative to SRC
    cls: str
    split: str | None  # from an existing train/val/test layout, else None until assigned
    info: FileInfo
    out_path: str = ""  # relative to OUT
    rescued: str = ""  # a downscaled copy (--max-size) of a JPEG too large to decode, in a temporary folder
    record: dict = field(default_factory=dict)  # --tfrecord: shard, record, stored size (manifest columns)


@dataclass
class PrepareResult:
    report: dict
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Found:
    """What _collect found under SRC."""

    layout: str  # classes | splits
    files: list[tuple[str | None, str, str]]  # (split from the layout or None, class, path) of each image file
    not_images: list[tuple[str, str]]  # (path, reason)
    ignored: list[str]  # hidden, system and stray files, relative to SRC
    empty: list[str]  # class folders without images, relative to SRC


def _collect(src: str) -> Found:
    layout = folders.detect_layout(src)
    roots = []
    if layout == "splits":
        for d in folders.visible_dirs(src):
            if d in folders.SPLIT_ALIASES:
                roots.append((folders.SPLIT_ALIASES[d], os.path.join(src, d)))
    else:
        roots.append((None, src))
    files, skipped, ignored, empty = [], [], [], []
    for split, folder in roots:
        for cls in folders.visible_dirs(folder):
            cdir = os.path.join(folder, cls)
            found = folders.walk_images(cdir, skipped)
            if not found:
                empty.append(os.path.relpath(cdir, src))
            files += [(split, cls, p) for p in found]
        for dirpath, dirnames, filenames in os.walk(folder):
            hidden = [n for n in filenames + dirnames if folders.is_ignored(n)]
            ignored += [os.path.relpath(os.path.join(dirpath, n), src) for n in hidden]
            dirnames[:] = [d for d in dirnames if d not in hidden and not os.path.islink(os.path.join(dirpath, d))]
            if dirpath == folder:  # files beside the class folders (a README) are not data
                ignored += [os.path.relpath(os.path.join(dirpath, n), src) for n in filenames if n not in hidden]
    return Found(layout, files, skipped, sorted(set(ignored)), empty)


def _assign(groups: dict[str, list[Entry]], val: float, test: float, seed: int) -> None:
    """The one splitter (data.split) over the duplicate groups (exact copies travel together) still without a split."""
    units = [holdout.Unit(sha, members[0].cls, members[0].source) for sha, members in groups.items()
             # A copy of an image in an existing val/ or test/ folder stays where the user put it (reported as leakage).
             if all(m.split is None for m in members)]
    for sha, chosen in holdout.assign(units, val, test, seed).items():
        for e in groups[sha]:
            e.split = chosen


def _link(src: str, dst: str, copy: bool) -> str:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if copy:
        shutil.copyfile(src, dst)  # contents only: the source's metadata is left alone
        return "copy"
    try:
        os.link(os.path.realpath(src), dst)
        return "hardlink"
    except OSError:  # another file system: a copy, so that every file of OUT stays inside OUT (manifest paths are confined)
        shutil.copyfile(src, dst)
        return "copy"


def _downscale(src: str, dst: str, info: FileInfo, max_size: int) -> tuple[str, int, int]:
    """A copy whose longer side is max_size (aspect kept, EXIF orientation applied, RGB); returns (path, w, h)."""
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size was checked: imagefile.probe_bytes
        im = Image.open(src)
    with im:
        if info.format == "jpeg":
            im.draft("RGB", (max_size, max_size))  # DCT scaling: decode a large JPEG at 1/2..1/8 size
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        im.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        stem, _ = os.path.splitext(dst)
        dst = stem + (".jpg" if info.format == "jpeg" else ".png")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if info.format == "jpeg":
            im.save(dst, "JPEG", quality=95)
        else:
            im.save(dst, "PNG")
        return dst, im.width, im.height


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    v = sorted(values)
    return {"min": v[0], "median": v[len(v) // 2], "max": v[-1]}


@dataclass
class Prepared:
    """What `imgclass prepare` did: the report of SRC -> OUT, or (--example, --from-tfds) a one-line summary."""

    summary: str
    report: dict | None = None
    src: str = ""

    def check_found_images(self) -> None:
        """After the report is shown: a SRC without one readable image is an error."""
        if self.report is not None and not self.report["images"]:
            raise ImgclassError(f"{self.src}: none of its {self.report['files']} file(s) is a readable image (see the "
                                "report)")


def checks_images(config: PrepareConfig) -> bool:
    """Whether run() checks images (and so reports progress): not for --example and --from-tfds."""
    return config.example is None and config.from_tfds is None


def run(src: str, out: str | None, config: PrepareConfig, progress=None) -> Prepared:
    """`imgclass prepare`: SRC OUT checked and written (prepare()), or with --example / --from-tfds the dataset
    written to SRC (the only path given)."""
    if checks_images(config):
        if out is None:
            raise ImgclassError("pass SRC and OUT (imgclass prepare SRC OUT), or --example digits OUT")
        result = prepare(src, out, config, progress=progress)
        return Prepared(f"wrote {out}", result.report, src)
    if out is not None:
        raise ImgclassError("with --example or --from-tfds pass only OUT, not SRC OUT")
    if config.example is not None and config.from_tfds is not None:
        raise ImgclassError("pass --example or --from-tfds, not both")
    if config.tfrecord:
        raise ImgclassError("--tfrecord applies to imgclass prepare SRC OUT; write the example first, then "
                            "prepare it with --tfrecord")
    if config.example is not None:
        from imgclass_cli.config import ExampleConfig
        from imgclass_cli.data import examples

        counts = examples.write_digits(src, ExampleConfig(seed=config.seed), force=config.force)
        what = "10 digit classes"
    else:
        from imgclass_cli.data import tfds

        counts, names = tfds.write_dataset(config.from_tfds, src, data_dir=config.data_dir, force=config.force)
        what = f"{len(names)} classes of {config.from_tfds}"
    parts = " and ".join(f"{n} {s}" for s, n in counts.items())
    return Prepared(f"wrote {parts} images of {what} to {src}")


def prepare(src: str, out: str, config: PrepareConfig, *, progress=None) -> PrepareResult:
    """Check every file under SRC, split it, and write OUT: class folders of links (or copies), manifest.csv and
    prepare.json. SRC is only read. `progress(done, total)` is called as files are checked. OUT is locked
    against a second prepare for the whole run; an existing OUT is replaced only with config.force."""
    folders.check_root(src)
    if config.tfrecord and config.copy:
        raise ImgclassError("--copy has no effect with --tfrecord (the records hold copies of the images); drop it")
    with fs.locked(out):
        return _prepare(src, out, config, config.force, progress)


def _prepare(src: str, out: str, config: PrepareConfig, force: bool, progress) -> PrepareResult:
    started = time.time()
    _check_paths(src, out, force)
    found = _collect(src)
    excluded = _exclude(src, found, config.exclude)
    val_f, test_f = _holdout_fractions(src, found, config)
    entries, decode_seconds = _check(src, found, progress)
    rescue_tmp = tempfile.TemporaryDirectory(prefix="imgclass-prepare-") if config.max_size else None
    try:
        if rescue_tmp is not None:
            for e in entries:
                if _rescuable(e.info):
                    _rescue(os.path.join(src, e.source), rescue_tmp.name, e, config.max_size)
        ok = [e for e in entries if e.info.ok]
        groups = _assign_splits(ok, found.layout, val_f, test_f, config.seed)
        _assign_out_paths(ok, found.layout)
        with fs.staged(out, force, fs.PREPARED) as tmp:
            laid_out = _write_records(src, tmp, ok, config) if config.tfrecord else _lay_out(src, tmp, ok, config)
            report = _report(src, out, found, entries, groups, val_f, test_f, config.seed)
            report["excluded"] = excluded
            report["decode"] = {"images": len(found.files), "seconds": round(decode_seconds, 3),
                                "images_per_second": round(len(found.files) / decode_seconds, 1)
                                if decode_seconds > 0 else None}
            report.update(laid_out, seconds=round(time.time() - started, 3))
            _write_manifest(src, tmp, entries, config, val_f, test_f, report)
    finally:
        if rescue_tmp is not None:
            rescue_tmp.cleanup()
    return PrepareResult(report, entries)


def _exclude(src: str, found: Found, listed: str | None) -> dict | None:
    """--exclude FILE: its images leave `found` (neither checked nor written, not in the manifest); what was left
    out, and the listed paths that are not files of SRC, for the report."""
    if not listed:
        return None
    from imgclass_cli.data import exclude

    excl = exclude.read(listed, src)
    left = [p for _, _, p in found.files if p in excl] + [p for p, _ in found.not_images if p in excl]
    found.files = [f for f in found.files if f[2] not in excl]
    found.not_images = [b for b in found.not_images if b[0] not in excl]
    return {"file": listed, "count": len(left), "paths": sorted(os.path.relpath(p, src) for p in left),
            "unknown": [{"line": n, "path": p} for n, p in excl.unknown(left)]}


def _check_paths(src: str, out: str, force: bool) -> None:
    folders.check_root(src)
    src_abs, out_abs = os.path.realpath(src), os.path.realpath(out)
    if out_abs == src_abs or out_abs.startswith(src_abs + os.sep) or src_abs.startswith(out_abs + os.sep):
        raise ImgclassError(f"{out}: must be outside the source folder {src} (and not contain it)")
    if dataset.is_prepared(src):
        raise ImgclassError(f"{src}: is already a prepared folder (it has {files.MANIFEST}); use it directly")
    fs.check_out(out, force, fs.PREPARED)


def _holdout_fractions(src: str, found: Found, config: PrepareConfig) -> tuple[float, float]:
    """An existing split is respected; missing splits are carved from train only when asked for explicitly."""
    if not found.files and not found.not_images:
        raise ImgclassError(f"{src}: no files found; expected one sub-folder of images per class")
    existing = {s for s, _, _ in found.files if s}
    if found.layout == "splits" and "train" not in existing:
        raise ImgclassError(f"{src}: has val/test folders but no train/ images")
    if found.layout == "classes":
        val_f = DEFAULT_HOLDOUT if config.val is None else config.val
        test_f = DEFAULT_HOLDOUT if config.test is None else config.test
    else:
        val_f = 0.0 if "val" in existing or config.val is None else config.val
        test_f = 0.0 if "test" in existing or config.test is None else config.test
    if val_f + test_f >= 1:
        raise ImgclassError(f"--val {val_f} + --test {test_f} leaves nothing to train on")
    return val_f, test_f


def _check(src: str, found: Found, progress) -> tuple[list[Entry], float]:
    """Entries of every file found (images checked, non-images bad), and the seconds the decode check took."""
    total = len(found.files)
    done = [0]

    def tick(_info):
        done[0] += 1
        if progress:
            progress(done[0], total)

    if found.files:
        from imgclass_cli._tf import tf

        tf()  # imported before the clock starts: the decode rate is the decoder's, not TensorFlow's start-up
    t0 = time.time()
    infos = verify.check_files([p for _, _, p in found.files], on_done=tick)
    seconds = time.time() - t0
    entries = [Entry(os.path.relpath(p, src), cls, split, info) for (split, cls, p), info in zip(found.files, infos)]
    entries += [Entry(os.path.relpath(p, src), _class_of(p, src, found.layout), None,
                      FileInfo(path=p, status="bad", reason=r)) for p, r in found.not_images]
    return entries, seconds


def _assign_splits(ok: list[Entry], layout: str, val_f: float, test_f: float, seed: int) -> dict[str, list[Entry]]:
    """Give every readable entry its split; returns the groups of exact duplicates (by sha256)."""
    groups: dict[str, list[Entry]] = {}
    for e in sorted(ok, key=lambda e: e.source):
        groups.setdefault(e.info.sha256, []).append(e)
    if layout == "splits":  # carve val/test out of train only
        for e in ok:
            if e.split == "train" and (val_f or test_f):
                e.split = None
    _assign(groups, val_f, test_f, seed)
    for e in ok:
        e.split = e.split or "train"  # a copy of an image already in val/ or test/ stays in train: reported as leakage
    return groups


def _assign_out_paths(ok: list[Entry], layout: str) -> None:
    """Files in OUT: <split>/<class>/<path inside the class folder>; a clash (two sources -> one name) gets ~N."""
    taken: set[str] = set()
    for e in sorted(ok, key=lambda e: e.source):
        inner = _inner_path(e.source, layout)
        target = os.path.join(e.split, e.cls, inner)
        stem, ext = os.path.splitext(target)
        n = 2
        while target.lower() in taken:
            target = f"{stem}~{n}{ext}"
            n += 1
        taken.add(target.lower())
        e.out_path = target


def _lay_out(src: str, tmp: str, ok: list[Entry], config: PrepareConfig) -> dict:
    """Link, copy or downscale every readable image into the staging folder; returns what was done."""
    link_kinds: Counter = Counter()
    downscaled = 0
    for e in ok:
        s = os.path.join(src, e.source)
        dst = os.path.join(tmp, e.out_path)
        if e.rescued:
            dst = os.path.splitext(dst)[0] + ".jpg"
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(e.rescued, dst)
            e.out_path = os.path.relpath(dst, tmp)
            downscaled += 1
        elif config.max_size and max(e.info.width, e.info.height) > config.max_size:
            dst, _, _ = _downscale(s, dst, e.info, config.max_size)
            e.out_path = os.path.relpath(dst, tmp)
            e.info.orientation = 1  # applied in the copy
            downscaled += 1
        else:
            link_kinds[_link(s, dst, config.copy)] += 1
    return {"links": dict(link_kinds), "downscaled": downscaled}


def _write_records(src: str, tmp: str, ok: list[Entry], config: PrepareConfig) -> dict:
    """--tfrecord: every readable image (or its --max-size copy) as a record in the shards of its split, in
    manifest order; returns what was done."""
    classes = sorted({e.cls for e in ok})
    ordered = sorted(ok, key=lambda e: e.source)  # manifest order: the order records are dealt to the shards
    files: dict[int, str] = {}
    downscaled = 0
    shards = {}
    with tempfile.TemporaryDirectory(prefix="imgclass-records-") as scratch:
        for e in ordered:
            s = os.path.join(src, e.source)
            if e.rescued:
                files[id(e)] = e.rescued
                e.out_path = os.path.splitext(e.out_path)[0] + ".jpg"
                downscaled += 1
            elif config.max_size and max(e.info.width, e.info.height) > config.max_size:
                dst, _, _ = _downscale(s, os.path.join(scratch, e.out_path), e.info, config.max_size)
                files[id(e)] = dst
                e.out_path = os.path.relpath(dst, scratch)
                e.info.orientation = 1  # applied in the copy
                downscaled += 1
            else:
                files[id(e)] = s
        for split in SPLITS:
            members = [e for e in ordered if e.split == split]
            if not members:
                continue
            records = [tfrecord.Record(files[id(e)], classes.index(e.cls), e.cls, e.source, e.out_path,
                                       e.info.orientation) for e in members]
            placed = tfrecord.write_split(tmp, split, records, config.shard_size)
            for e, where in zip(members, placed):
                e.record = where
            shards[split] = int(placed[0]["shard"].rsplit("-of-", 1)[1].split(".")[0])
    return {"links": {}, "downscaled": downscaled, "tfrecord": {"shards": shards, "shard_size": config.shard_size}}


def _write_manifest(src: str, tmp: str, entries: list[Entry], config: PrepareConfig, val_f: float, test_f: float,
                    report: dict) -> None:
    from imgclass_cli import __version__

    ordered = sorted(entries, key=lambda e: e.source)
    rows = [_row(e) for e in ordered if e.info.ok] + [_row(e) for e in ordered if not e.info.ok]
    fs.write_text_atomic(os.path.join(tmp, files.MANIFEST), manifest.to_csv(rows, tfrecords=config.tfrecord))
    options = {"val": val_f, "test": test_f, "seed": config.seed, "copy": config.copy, "max_size": config.max_size}
    if config.tfrecord:
        options.update(tfrecord=True, shard_size=config.shard_size)
    fs.write_json_atomic(os.path.join(tmp, files.PREPARE_INFO), {
        "imgclass_prepare": __version__, "source": os.path.realpath(src), "options": options, "report": report,
    })


def _rescuable(info: FileInfo) -> bool:
    """A JPEG refused for its size that DCT scaling (1/8) brings under the limit: --max-size can still use it."""
    return (not info.ok and info.format == "jpeg" and "megapixel limit" in info.reason and info.width > 0
            and (info.width / 8) * (info.height / 8) <= MAX_IMAGE_PIXELS)


def _rescue(path: str, folder: str, e: Entry, max_size: int) -> None:
    src_info = e.info
    try:
        dst, _, _ = _downscale(path, os.path.join(folder, f"{len(os.listdir(folder))}.jpg"), src_info, max_size)
    except Exception as err:  # a broken file behind a valid header: it stays bad, with the first reason
        src_info.reason += f"; downscaling failed too ({first_line(err)})"
        return
    check = verify.check_file(dst, digest=False)
    if not check.ok:
        fs.remove_file(dst)
        return
    e.info = FileInfo(path=src_info.path, format="jpeg", width=src_info.width, height=src_info.height,
                             mode=src_info.mode, orientation=1, sha256=src_info.sha256, bytes=src_info.bytes)
    e.rescued = dst


def _class_of(path: str, src: str, layout: str) -> str:
    parts = os.path.relpath(path, src).split(os.sep)
    i = 1 if layout == "splits" else 0
    return parts[i] if len(parts) > i + 1 else ""


def _inner_path(source: str, layout: str) -> str:
    parts = source.split(os.sep)
    return os.path.join(*parts[2:] if layout == "splits" else parts[1:])


def _row(e: Entry) -> dict:
    i = e.info
    return {"path": e.out_path if i.ok else "", "class": e.cls, "split": (e.split or "") if i.ok else "",
            "sha256": i.sha256, "width": i.width or "", "height": i.height or "", "status": i.status,
            "reason": i.reason, "orientation": i.orientation if i.ok else "", "source": e.source, **e.record}


_MODE_NOTES = {
    "L": "grayscale: read as RGB (three equal channels)",
    "1": "black and white: read as RGB",
    "LA": "grayscale with alpha: alpha dropped, read as RGB",
    "RGBA": "RGBA: alpha dropped (transparent pixels show their stored colour)",
    "P": "palette image: read as RGB",
    "PA": "palette image with alpha: read as RGB, alpha dropped",
}
_PLACEHOLDER = re.compile(r"not.?found|placeholder|unavailable|missing|no.?image|default|blank", re.I)


def _report(src, out, found: Found, entries: list[Entry], groups, val_f, test_f, seed) -> dict:
    ok = [e for e in entries if e.info.ok]
    classes = sorted({e.cls for e in ok})
    counts = {s: {c: 0 for c in classes} for s in SPLITS}
    for e in ok:
        counts[e.split][e.cls] += 1
    counts = {s: v for s, v in counts.items() if sum(v.values())}
    per_class = Counter(e.cls for e in ok)
    formats = Counter(e.info.format for e in ok)
    by_format: dict[str, list[str]] = {}
    for e in ok:
        by_format.setdefault(e.info.format, []).append(e.source)
    ext_ok = {"jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"), "png": (".png",), "gif": (".gif",), "bmp": (".bmp", ".dib")}
    mismatch = [{"path": e.source, "content": e.info.format} for e in ok
                if not e.source.lower().endswith(ext_ok.get(e.info.format, ()))]
    small = [e.source for e in ok if min(e.info.width, e.info.height) < SMALL_IMAGE_SIDE]
    return {
        "source": os.path.abspath(src),
        "out": os.path.abspath(out),
        "layout": found.layout,
        "classes": classes,
        "files": len(entries),
        "images": len(ok),
        "counts": counts,
        "per_class": {c: per_class[c] for c in classes},
        "imbalance_ratio": round(max(per_class.values()) / min(per_class.values()), 2) if per_class else None,
        "split": {"val": val_f, "test": test_f, "seed": seed},
        "formats": dict(sorted(formats.items(), key=lambda kv: (-kv[1], kv[0]))),
        "rare_formats": {f: sorted(ps) for f, ps in by_format.items() if len(ps) <= 3 and len(by_format) > 1},
        "extension_mismatch": mismatch,
        "sizes": {"width": _stats([e.info.width for e in ok]), "height": _stats([e.info.height for e in ok]),
                  "megapixels": _stats([round(e.info.width * e.info.height / 1e6, 3) for e in ok])},
        "small": {"threshold": SMALL_IMAGE_SIDE, "count": len(small), "examples": small[:10]},
        "bad": [{"path": e.source, "class": e.cls, "reason": e.info.reason}
                for e in sorted(entries, key=lambda e: e.source) if not e.info.ok],
        "notes": _notes(ok),
        "duplicates": _duplicates(groups),
        "empty_class_folders": found.empty,
        "ignored": found.ignored,
    }


def _notes(ok: list[Entry]) -> list[dict]:
    """Odd but usable files: rescued, animated, rotated, unusual modes, placeholder-looking or awkward names."""
    notes = []
    for e in ok:
        i = e.info
        if e.rescued:
            notes.append({"path": e.source, "note": f"{i.width}x{i.height} pixels, over the decode limit: "
                                                    f"downscaled by --max-size (DCT scaling, bounded memory)"})
        if i.frames > 1:
            notes.append({"path": e.source, "note": f"animated GIF ({i.frames} frames): the first frame is used"})
        if i.orientation != 1:
            notes.append({"path": e.source, "note": f"EXIF orientation {i.orientation}: turned upright when read"})
        if i.format == "gif" and i.mode in ("P", "PA"):
            pass  # every GIF is a palette image: nothing to say
        elif i.mode in _MODE_NOTES:
            notes.append({"path": e.source, "note": _MODE_NOTES[i.mode]})
        elif i.mode not in ("RGB", "RGBX"):
            notes.append({"path": e.source, "note": f"{i.mode} image: converted to 8-bit RGB when read"})
        name = os.path.basename(e.source)
        if _PLACEHOLDER.search(name):
            notes.append({"path": e.source, "note": f"the name suggests a placeholder ({i.format.upper()} "
                                                    f"{i.width}x{i.height}), not a photo of {e.cls}: check it"})
        if " " in name or not name.isascii():
            notes.append({"path": e.source, "note": "name with spaces or non-ASCII characters: read fine, "
                                                    "kept as is in manifest.csv; quote it in shell commands"})
    return notes


def _duplicates(groups: dict[str, list[Entry]]) -> dict:
    dup_class, dup_cross, dup_split = [], [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        paths = [m.source for m in members]
        if len({m.cls for m in members}) > 1:
            dup_cross.append(paths)
        else:
            dup_class.append(paths)
        if len({m.split for m in members}) > 1:
            dup_split.append([f"{m.split}: {m.source}" for m in members])
    return {"within_class": dup_class, "across_classes": dup_cross, "across_splits": dup_split}
