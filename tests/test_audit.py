"""imgclass audit: the three checks in miniature (a flipped label found, a resized copy across splits found, a
black image flagged), the gate's exit 3, the exclude list and --exclude, bad input; and each detector on arrays."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFilter

from imgclass_cli.cli import app
from imgclass_cli.data import exclude, findings, holdout, labelissues, neardup, quality
from tests.conftest import COLOURS, make_image


def make_photo(rng, colour, size=48) -> Image.Image:
    """A picture with structure (soft blobs over the class colour), so a resized copy still looks like it."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = np.zeros((size, size))
    for _ in range(5):
        cy, cx, r, a = rng.random(4)
        light += (a - 0.5) * 160 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.08 + 0.2 * r) ** 2))
    arr = np.array(colour, np.float32) + light[..., None] + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def copy_of(im: Image.Image) -> Image.Image:
    """Resized to 80%, 6% cropped off the top left, as a JPEG at quality 75."""
    w, h = im.size
    small = im.resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.LANCZOS)
    sw, sh = small.size
    small = small.crop((int(sw * 0.06), int(sh * 0.06), sw, sh))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """train/ and val/ of the conftest colours; one blue picture filed under red, a black frame in green, and a
    resized, cropped, recompressed copy of a green training picture in val/."""
    root = tmp_path_factory.mktemp("dirty") / "data"
    rng = np.random.default_rng(3)
    for split, n in (("train", 12), ("val", 4)):
        for name, colour in COLOURS.items():
            os.makedirs(root / split / name)
            for i in range(n):
                img = make_image(rng, colour) if i % 2 else make_photo(rng, colour)
                img.save(root / split / name / f"{name}{i:02d}.png")
    make_image(rng, COLOURS["blue"]).save(root / "train" / "red" / "flipped.png")
    Image.new("RGB", (48, 48)).save(root / "train" / "green" / "black.png")
    copy_of(Image.open(root / "train" / "green" / "green00.png")).save(root / "val" / "green" / "copy.jpg")
    return str(root)


@pytest.fixture(scope="module")
def audited(dirty, trained_run, tmp_path_factory):
    """One audit of `dirty` with every output, shared by the tests below."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("audit")
    listing = str(out / "leave-out.txt")
    r = CliRunner().invoke(app, ["audit", dirty, "--run", trained_run, "--out", str(out / "a"), "--fail-on",
                                 "label,leak", "--exclude-list", listing])
    report = json.load(open(out / "a" / "audit.json"))
    rows = list(csv.DictReader(open(out / "a" / "issues.csv")))
    return r, report, rows, listing


def _rows(rows, kind):
    return {os.path.basename(r["path"]): r for r in rows if r["issue"] == kind}


def test_audit_finds_the_flipped_label(audited):
    _, report, rows, _ = audited
    labels = _rows(rows, "label")
    assert labels["flipped.png"]["given"] == "red" and labels["flipped.png"]["suggested"] == "blue"
    assert float(labels["flipped.png"]["score"]) > 0.5
    assert set(labels) - {"flipped.png", "black.png"} == set()  # no well-labelled picture flagged
    assert report["checks"]["label"]["folds"] == 5 and report["checks"]["label"]["ranked_by"] == "self_confidence"


def test_audit_finds_the_resized_copy_in_another_split(audited):
    _, report, rows, _ = audited
    leaks = _rows(rows, "leak")
    assert set(leaks) == {"copy.jpg", "green00.png"}
    assert os.path.basename(leaks["copy.jpg"]["other"]) == "green00.png" and leaks["copy.jpg"]["split"] == "val"
    assert [os.path.basename(p) for p in report["groups"][0]] == ["green00.png", "copy.jpg"]
    assert not _rows(rows, "duplicate") and not _rows(rows, "conflict")


def test_audit_flags_the_black_image(audited):
    _, _, rows, _ = audited
    dark = _rows(rows, "dark")
    assert set(dark) == {"black.png"} and float(dark["black.png"]["score"]) == 1.0
    assert not {k for k in ("blurry", "low_contrast", "bright") for r in rows if r["issue"] == k}


def test_the_gate_fails_with_exit_3_after_writing_everything(audited):
    r, report, _, listing = audited
    assert r.exit_code == 3, r.output
    # Progress of each stage (stderr is not a terminal here: one line when a stage ends), then the files.
    for line in ("checking images: 51 images in", "embedding: 51 images in", "cross-fitting: 5 folds in",
                 "wrote " + listing):
        assert line in r.stderr
    assert "Error: audit gate failed: 1 label, 2 leak issue(s) found (--fail-on label,leak)" in r.stderr
    assert report["gates"] == {"fail_on": ["label", "leak"], "failed": ["label", "leak"]}
    assert os.path.exists(listing)


def test_audit_html_shows_each_kind_found_with_its_images_and_the_pair_side_by_side(audited):
    from imgclass_cli.report import html
    from tests.test_report import EXTERNAL, parse, png_of

    r, report, rows, _ = audited
    folder = os.path.dirname(r.stderr.split("wrote ")[1].split()[0])
    page = open(os.path.join(folder, "audit.html"), encoding="utf-8").read()
    assert f"wrote {os.path.join(folder, 'audit.html')}" in r.stderr
    bare = page.replace(html.CSP, "")
    for uri in set(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)):
        bare = bare.replace(uri, "")
    assert not [x for x in EXTERNAL if x in bare] and html.CSP in page
    dom = parse(page)
    text = "".join(dom.text)
    assert "script" not in dom.tags
    found = {k: n for k, n in report["counts"].items() if n}
    assert found == {"label": 1, "leak": 2, "dark": 1}
    for kind, n in found.items():
        assert f"{kind} ({n})" in text  # its gallery, with its count
    assert "conflict (" not in text and "blurry (" not in text  # kinds not found get no gallery
    # One card per flagged image, a pair once with both images: flipped.png, black.png, green00.png + copy.jpg.
    assert sorted(dom.cards) == [1, 1, 2]
    for name in ("flipped.png", "black.png", "green00.png", "copy.jpg"):
        assert name in text
    assert "red -> blue" in text  # the label card: given and suggested class
    assert all(png_of(src).size[0] >= 96 for src in dom.images)


def test_audit_html_gallery_0_keeps_counts_and_checks_only(dirty, tmp_path, runner):
    from tests.test_report import parse

    r = runner.invoke(app, ["audit", dirty, "--out", str(tmp_path / "a"), "--gallery", "0", "-q"])
    assert r.exit_code == 0, r.output
    dom = parse(open(tmp_path / "a" / "audit.html", encoding="utf-8").read())
    assert dom.images == [] and "no gallery (--gallery 0)" in "".join(dom.text)
    assert "Issues per kind and class" in "".join(dom.text)


def test_the_exclude_list_leaves_out_the_bad_images_and_prepare_honours_it(audited, dirty, tmp_path, runner):
    _, report, _, listing = audited
    # The flipped label, the black frame, and of the two copies the training one (the val copy stays).
    assert open(listing).read() == "train/green/black.png\ntrain/green/green00.png\ntrain/red/flipped.png\n"
    r = runner.invoke(app, ["prepare", dirty, str(tmp_path / "prep"), "--exclude", listing, "-f", "json"])
    assert r.exit_code == 0, r.output
    sources = {row["source"] for row in csv.DictReader(open(tmp_path / "prep" / "manifest.csv"))}
    assert not sources & {"train/green/black.png", "train/green/green00.png", "train/red/flipped.png"}
    assert json.loads(r.stdout)["excluded"] == {"file": listing, "count": 3, "unknown": [],
                                                "paths": sorted(open(listing).read().split())}
    assert len(sources) == report["images"] - 3


def test_train_scan_leaves_out_the_listed_images_before_splitting(dirty, tmp_path):
    from imgclass_cli.data import dataset

    listing = tmp_path / "x.txt"
    listing.write_text(f"train/red/flipped.png\r\n\n{os.path.join(dirty, 'train', 'green', 'black.png')}\n"
                       "train/red/nope.png\n")
    listed = exclude.read(str(listing), dirty)
    data = dataset.scan(dirty, val_split=0.0, seed=1, exclude=listed)
    names = {os.path.basename(s.path) for split in data.splits.values() for s in split}
    assert not names & {"flipped.png", "black.png"} and len(data.excluded) == 2
    assert exclude.unknown_message(listed, data.excluded) == (
        f"--exclude {listing}: 1 listed path(s) are not images of the data (line 4: train/red/nope.png); ignored")


def test_bad_exclude_files_are_one_clear_line(runner, data_dir, tmp_path):
    r = runner.invoke(app, ["train", data_dir, "--exclude", str(tmp_path / "none.txt"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and f"Error: --exclude {tmp_path / 'none.txt'}: no such file" in r.stderr
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"a.png\nb\0c\n")
    with pytest.raises(Exception, match="line 2 holds a NUL byte"):
        exclude.read(str(bad), data_dir)


def test_bad_input_is_one_line_and_exit_2(runner, data_dir, trained_run, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(os.path.join(data_dir, "red"), one / "red")
    r = runner.invoke(app, ["audit", str(one), "--out", str(tmp_path / "o1")])
    assert r.exit_code == 2 and "only one class (red) has images" in r.stderr
    few = tmp_path / "few"
    for c in ("red", "blue"):
        os.makedirs(few / c)
        shutil.copy(os.path.join(data_dir, c, "img001.png"), few / c / "a.png")
    r = runner.invoke(app, ["audit", str(few), "--run", trained_run, "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "Error: 2 image(s) is fewer than the 5 folds of the label check" in r.stderr
    r = runner.invoke(app, ["audit", data_dir, "--run", trained_run, "--backbone", "vgg16"])
    assert r.exit_code == 2 and "not both" in r.stderr
    r = runner.invoke(app, ["audit", data_dir, "--fail-on", "label"])
    assert r.exit_code == 2 and "the label check needs embeddings" in r.stderr
    r = runner.invoke(app, ["audit", data_dir, "--fail-on", "labels"])
    assert r.exit_code == 2 and "must be a comma-separated list of label, leak, duplicate, quality" in r.stderr
    os.makedirs(tmp_path / "mine")
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["audit", data_dir, "--out", str(tmp_path / "mine"), "--force"])
    assert r.exit_code == 2 and "refusing to replace it even with --force" in r.stderr


# ------------------------------------------------------------------ the detectors on arrays


def test_confident_learning_flags_the_off_diagonal_and_ranks_by_self_confidence():
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    probs = np.array([[.9, .1], [.8, .2], [.7, .3], [.2, .8], [.1, .9], [.3, .7], [.05, .95]])
    cj = labelissues.confident_joint(labels, probs)
    # t_0 = mean p_0 over label 0 = (.9+.8+.7+.05)/4; t_1 = (.8+.9+.7)/3
    assert np.allclose(cj.thresholds, [0.6125, 0.8])
    assert cj.flagged.tolist() == [6] and cj.suggested[6] == 1
    assert cj.joint.tolist() == [[3, 1], [0, 2]]  # image 5 (p_1 .7 < t_1 .8) is confident of nothing
    # Below its class's threshold but still the top prediction: not flagged (as cleanlab's confident_learning).
    labels2 = np.array([0, 0, 1, 1])
    probs2 = np.array([[.99, .01], [.55, .45], [.5, .5], [.1, .9]])
    assert labelissues.confident_joint(labels2, probs2).flagged.tolist() == []
    found, _ = labelissues.label_issues(labels, probs)
    assert found == [findings.Finding("label", 6, 0.95, 0.05, suggested=1)]


def _thumbs(images):
    return np.stack([np.asarray(im.convert("L").resize((neardup.THUMB, neardup.THUMB), Image.Resampling.BILINEAR,
                                                       reducing_gap=None), np.float32) for im in images])


def test_near_duplicates_find_a_resized_cropped_copy_and_nothing_else():
    rng = np.random.default_rng(0)
    photos = [make_photo(rng, (120, 120, 120), size=96) for _ in range(40)]
    images = photos + [copy_of(photos[7]), copy_of(photos[21]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    coarse, fine = neardup.hashes(_thumbs(images))
    pairs = neardup.find_pairs(coarse, fine, coarse_bits=6, sure_bits=24, fine_bits=56, ratio=0.7)
    assert [tuple(p[:2]) for p in pairs.tolist()] == [(7, 40)]  # a mirrored picture is another picture
    assert 0.5 < neardup.similarity(pairs[0, 2]) < 1


def test_the_hash_table_finds_what_comparing_every_pair_finds():
    rng = np.random.default_rng(1)
    n = 1500
    coarse = rng.integers(0, 2**63, (n, neardup.VIEWS), dtype=np.int64).astype(np.uint64)
    fine = np.zeros((n, neardup.VIEWS, 4), np.uint64)
    for a, b, bits in ((3, 1000, 2), (10, 1499, 5), (42, 43, 7), (100, 200, 9)):  # 9 bits: beyond the radius
        flips = rng.choice(64, bits, replace=False)
        coarse[b, 0] = coarse[a, 5] ^ np.uint64(sum(1 << int(f) for f in flips))
    pairs = neardup.find_pairs(coarse, fine, coarse_bits=7, sure_bits=0, fine_bits=0, ratio=0.7)
    assert [tuple(p[:2]) for p in pairs.tolist()] == [(3, 1000), (10, 1499), (42, 43)]


def test_quality_flags_dark_bright_blurry_tiny_and_grayscale():
    rng = np.random.default_rng(2)
    sharp = [np.asarray(make_photo(rng, (90, 140, 60), 64)) for _ in range(20)]
    odd = [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 250, np.uint8),
           np.asarray(Image.fromarray(sharp[0]).filter(ImageFilter.GaussianBlur(4))),
           np.repeat(np.asarray(Image.fromarray(sharp[1]).convert("L"))[..., None], 3, axis=2), sharp[2]]
    stats = quality.measure(np.stack(sharp + odd))
    widths = [640] * 24 + [8]
    heights = [480] * 24 + [8]
    found, t = quality.quality_issues(stats, widths, heights)
    got = {(f.index, f.kind) for f in found}
    assert got == {(20, "dark"), (21, "bright"), (22, "blurry"), (23, "grayscale"), (24, "tiny")}
    assert t["tiny_shorter_side_below"] == 120.0 and quality.flat(stats).tolist() == [False] * 20 + [True, True] + [False] * 3


def test_leave_out_keeps_one_copy_the_held_out_one_or_none_when_the_labels_differ():
    pairs = np.array([[0, 1, 10], [2, 3, 5], [3, 4, 6]])
    labels, splits = [0, 0, 1, 1, 0], ["train", "val", "train", "train", "train"]
    paths = ["a", "b", "c", "d", "e"]
    found = [findings.Finding("label", 4, 0.9, suggested=1), findings.Finding("dark", 0, 1.0)]
    assert findings.leave_out(found, pairs, labels, splits, paths, ("duplicate", "leak")) == [0, 2, 3, 4]
    assert findings.leave_out(found, pairs, labels, splits, paths, ("leak",)) == [0]
    assert findings.leave_out(found, pairs, labels, splits, paths, ("label", "quality")) == [0, 4]


def test_near_duplicate_groups_can_be_kept_in_one_split_by_the_splitter():
    from imgclass_cli.data.folders import Sample

    samples = [Sample(f"{i}.png", i % 2) for i in range(40)]
    pairs = np.array([[0, 2, 3], [2, 4, 9], [1, 3, 4]])
    keys = holdout.group_keys([f"size:{i}" for i in range(40)], findings.groups(40, pairs))
    train, val = holdout.validation_split(samples, 0.5, 0, keys=keys, orders=[s.path for s in samples])
    where = {s.path: "val" for s in val} | {s.path: "train" for s in train}
    assert where["0.png"] == where["2.png"] == where["4.png"] and where["1.png"] == where["3.png"]
