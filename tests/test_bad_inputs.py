"""The bad input zoo: every awkward file a real folder holds, built here with Pillow and bytes, through every command."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgclass_cli.data import dataset, pipeline, verify
from imgclass_cli.cli import app

# Files that must be left out, with a phrase of the reason every command gives.
BAD = {
    "red/empty.jpg": "empty file",
    "red/truncated.jpg": "truncated or corrupt JPEG",
    "red/text.jpg": "not an image",
    "blue/huge.png": "over the 64-megapixel limit",
    "blue/pixel.png": "1x1 pixels",
    "blue/notes.txt": "not an image",
    "blue/selfloop.jpg": "symlink loop",
}
# Awkward but valid: used, and reported by prepare where it matters.
ODD = ["red/png_named.jpg", "red/animated.gif", "red/cmyk.jpg", "red/sixteen.png", "blue/gray.png",
       "blue/rgba.png", "blue/palette.png", "red/exif_rotated.jpg", "blue/été photo 1.png", "red/sub/deep/nested.png"]


def huge_png(path, side=20000):
    """A valid 1-bit side x side PNG of ~50 KB: the header says 400 megapixels, the file is tiny."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + b"\0" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def rotated_jpeg(path, orientation=6):
    """Stored: red top half, blue bottom half; EXIF says turn it (6: 90 degrees clockwise) for display."""
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:16] = (220, 20, 20)
    arr[16:] = (20, 20, 220)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif)


def build_zoo(root) -> str:
    rng = np.random.default_rng(0)
    colours = {"red": (210, 50, 40), "blue": (40, 60, 210)}
    for cls, colour in colours.items():
        os.makedirs(root / cls, exist_ok=True)
        for i in range(8):
            arr = np.clip(np.array(colour) + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"good{i}.png")
    red, blue = root / "red", root / "blue"
    (red / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (red / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (red / "text.jpg").write_text("this is not a picture")
    Image.new("RGB", (20, 20), (200, 40, 40)).save(red / "png_named.jpg", format="PNG")
    frames = [Image.new("RGB", (20, 20), c) for c in ((200, 30, 30), (30, 30, 200))]
    frames[0].save(red / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (20, 20), (0, 200, 200, 0)).save(red / "cmyk.jpg", "JPEG")
    Image.fromarray(np.full((20, 20), 30000, np.uint16)).save(red / "sixteen.png")
    rotated_jpeg(red / "exif_rotated.jpg")
    os.makedirs(red / "sub" / "deep")
    Image.new("RGB", (20, 20), (220, 60, 50)).save(red / "sub" / "deep" / "nested.png")
    os.symlink("..", red / "sub" / "loop")  # a folder link back to red/: walked once, not forever
    (red / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    Image.new("L", (20, 20), 60).save(blue / "gray.png")
    Image.new("RGBA", (20, 20), (40, 60, 210, 128)).save(blue / "rgba.png")
    Image.new("RGB", (20, 20), (40, 60, 200)).convert("P").save(blue / "palette.png")
    Image.new("RGB", (20, 20), (40, 60, 200)).save(blue / "été photo 1.png")
    Image.new("RGB", (1, 1), (40, 60, 200)).save(blue / "pixel.png")
    huge_png(blue / "huge.png")
    (blue / "notes.txt").write_text("collected on a sunny day")
    os.symlink("selfloop.jpg", blue / "selfloop.jpg")
    (blue / "._good0.png").write_bytes(b"\0\5\26\7")  # macOS resource fork: hidden
    os.makedirs(root / "green")  # an empty class folder
    return str(root)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("zoo"))


def fingerprint(root) -> dict:
    """sha256 and mtime of every file under root (symlinks as links, not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p), st.st_mtime_ns)
            else:
                out[p] = (hashlib.sha256(open(p, "rb").read()).hexdigest(), st.st_mtime_ns, st.st_size)
    return out


def test_check_file_gives_each_bad_file_its_reason(zoo):
    for rel, phrase in BAD.items():
        info = verify.check_file(os.path.join(zoo, rel))
        assert not info.ok and phrase in info.reason, (rel, info.reason)
    for rel in ODD:
        info = verify.check_file(os.path.join(zoo, rel))
        assert info.ok, (rel, info.reason)
    assert verify.check_file(os.path.join(zoo, "red/animated.gif")).frames == 2
    assert verify.check_file(os.path.join(zoo, "red/cmyk.jpg")).mode == "CMYK"
    assert verify.check_file(os.path.join(zoo, "red/exif_rotated.jpg")).orientation == 6
    assert verify.check_file(os.path.join(zoo, "red/png_named.jpg")).format == "png"


def test_huge_image_is_refused_from_its_header(zoo):
    path = os.path.join(zoo, "blue/huge.png")
    assert os.path.getsize(path) < 200_000
    info = verify.probe_bytes(open(path, "rb").read(), path)
    assert not info.ok and "400 megapixels" in info.reason
    batch = next(pipeline.iter_batches([path], 16, 1))  # prediction refuses it the same way, without decoding
    assert batch.ok == [False] and "megapixel" in batch.errors[0]


def test_scan_walks_symlink_loop_once_and_ignores_hidden(zoo):
    ds = dataset.scan(zoo, val_split=0, seed=0)
    paths = [os.path.relpath(s.path, zoo) for s in ds.splits["train"]]
    assert "red/sub/deep/nested.png" in paths and not any("loop" in p for p in paths)
    assert not any(os.path.basename(p).startswith(".") for p in paths)
    skipped = {os.path.relpath(p, zoo): r for p, r in ds.skipped}
    assert "symlink loop" in skipped["red/sub/loop"]
    assert "symlink loop" in skipped["blue/selfloop.jpg"] and "empty file" in skipped["red/empty.jpg"]
    assert "no images" in skipped["green"]
    assert ds.class_names == ["blue", "red"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:2, :5] = 255  # an asymmetric mark
    arr[5:, 6:] = (0, 255, 0)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = pipeline.decode(open(path, "rb").read(), 8, orientation).numpy()
    assert (got == expected).all()


def test_exif_orientation_identical_in_training_and_prediction(zoo):
    path = os.path.join(zoo, "red/exif_rotated.jpg")
    info = verify.check_file(path)
    sample = dataset.Sample(path, 0, info.orientation)
    spec = pipeline.PipelineSpec(image_size=16, batch_size=1, seed=0)
    x_train = next(iter(pipeline.build([sample], spec, training=False)))[0].numpy()[0]
    x_pred = next(pipeline.iter_batches([path], 16, 1)).images[0]
    assert np.array_equal(x_train, x_pred)
    # Turned 90 degrees clockwise: the red top half is now on the right, blue on the left.
    assert x_pred[8, 12, 0] > 150 and x_pred[8, 3, 2] > 150
    # The check's decode (the images it keeps for the first epoch): turned when told so, beside an upright file.
    images, failed = pipeline.decode_all(2, lambda i: (path, (6, 1)[i], None), 16, keep=True)
    assert not failed and np.array_equal(images[0], x_pred) and not np.array_equal(images[1], x_pred)


@pytest.mark.slow
def test_zoo_prepare_finetune_evaluate_predict_skip(runner, zoo, tmp_path):
    before = fingerprint(zoo)
    prep = tmp_path / "prep"
    r = runner.invoke(app, ["prepare", zoo, str(prep), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    bad = {b["path"]: b["reason"] for b in report["bad"]}
    for rel, phrase in BAD.items():
        assert phrase in bad[rel], (rel, bad.get(rel))
    assert "red/sub/loop" in bad
    assert report["empty_class_folders"] == ["green"]
    assert any(p.endswith(".DS_Store") for p in report["ignored"])
    assert {"path": "red/png_named.jpg", "content": "png"} in report["extension_mismatch"]
    notes = {n["path"]: n["note"] for n in report["notes"]}
    assert "animated" in notes["red/animated.gif"] and "EXIF orientation 6" in notes["red/exif_rotated.jpg"]
    assert "CMYK" in notes["red/cmyk.jpg"]
    rows = list(csv.DictReader(open(prep / "manifest.csv", encoding="utf-8")))
    by_source = {row["source"]: row for row in rows}
    assert by_source["blue/été photo 1.png"]["status"] == "ok"
    assert os.path.exists(prep / by_source["blue/été photo 1.png"]["path"])
    assert by_source["red/exif_rotated.jpg"]["orientation"] == "6"
    assert by_source["red/truncated.jpg"]["status"] == "bad" and by_source["red/truncated.jpg"]["path"] == ""

    run = tmp_path / "run"
    r = runner.invoke(app, ["finetune", str(prep), "--backbone", "mobilenet", "--weights", "none", "--epochs", "1",
                            "--image-size", "32", "--out", str(run), "-q"])
    assert r.exit_code == 0, r.output
    assert "truncated.jpg" in r.stderr and "found by prepare" in r.stderr  # named, not decoded again
    from imgclass_cli.run import rundir

    model, info = rundir.load(str(run))  # finetune trains only the head (was test_finetune_keeps_the_backbone_frozen)
    assert model.get_layer("backbone").trainable is False
    assert model.get_layer("classifier").units == len(info.class_names) == 2  # green/ is empty
    assert info.config.command == "finetune" and info.config.arch == "mobilenet"
    r = runner.invoke(app, ["evaluate", str(run), str(prep), "-f", "json", "--out", str(tmp_path / "m.json"), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["num_samples"] == sum(1 for row in rows if row["split"] == "test")
    r = runner.invoke(app, ["predict", str(run), zoo, "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    recs = {os.path.relpath(x["path"], zoo): x for x in map(json.loads, r.stdout.splitlines())}
    assert recs["red/truncated.jpg"]["status"] == "error" and "red/truncated.jpg" in r.stderr
    assert recs["blue/huge.png"]["status"] == "error" and "megapixel" in recs["blue/huge.png"]["error"]
    assert recs["red/exif_rotated.jpg"]["status"] == "ok" and recs["red/cmyk.jpg"]["status"] == "ok"
    assert "Traceback" not in r.output
    assert fingerprint(zoo) == before  # prepare, finetune, evaluate and predict never touch the source


@pytest.mark.slow
def test_zoo_train_raw_folder_skips_then_fail_stops_at_first_bad_file(runner, zoo, tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", zoo, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "1",
                            "--val", "0.25", "--out", str(run), "-q"])
    assert r.exit_code == 0, r.output
    for rel in ("red/truncated.jpg", "blue/huge.png", "blue/pixel.png", "red/text.jpg"):
        assert f"{rel}: " in r.stderr.replace(zoo + os.sep, ""), rel
    split = [row["path"] for row in csv.DictReader(open(run / "split.csv", encoding="utf-8"))]
    assert "red/truncated.jpg" not in split and "red/exif_rotated.jpg" in split

    r = runner.invoke(app, ["train", zoo, "--arch", "simple-cnn", "--image-size", "32", "--epochs", "1",
                            "--out", str(tmp_path / "x"), "--on-bad-image", "fail"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--on-bad-image fail" in lines[0]
    assert os.path.join(zoo, "blue", "notes.txt") in lines[0]  # the first bad file in path order
    assert not (tmp_path / "x").exists()

    r = runner.invoke(app, ["evaluate", str(run), zoo, "--on-bad-image", "fail", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "--on-bad-image fail" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["predict", str(run), os.path.join(zoo, "red"), "-f", "csv", "--on-bad-image", "fail"])
    assert r.exit_code == 2 and os.path.join(zoo, "red", "truncated.jpg") in r.stderr


def test_only_one_class(runner, tmp_path):
    os.makedirs(tmp_path / "src" / "cats")
    for i in range(3):
        Image.new("RGB", (10, 10), (i, i, i)).save(tmp_path / "src" / "cats" / f"{i}.png")
    r = runner.invoke(app, ["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "-f", "json", "-q"])
    assert r.exit_code == 0 and json.loads(r.stdout)["classes"] == ["cats"]
    r = runner.invoke(app, ["train", str(tmp_path / "out"), "--image-size", "32"])
    assert r.exit_code == 2 and "only one class (cats)" in r.stderr


def test_plain_pngs_are_probed_without_pillow_exactly_as_pillow_reads_them_and_the_rest_go_to_pillow(tmp_path):
    """The header probe reads plain 8-bit PNGs itself (Pillow's open was most of the check's probe time): the same
    size and mode as Pillow for each colour type; anything else (16-bit, interlaced, a bad CRC, an orientation, a
    chunk cut short, an unknown chunk before the pixels) is left to Pillow and gets exactly the result it gave."""
    import io
    import struct
    import zlib

    from PIL import Image, PngImagePlugin

    from imgclass_cli.data import imagefile

    def png(mode, size=(9, 7), palette=1, **kw):
        buf = io.BytesIO()
        im = Image.new(mode, size)
        if mode == "P":
            im.putpalette(list(range(palette)) * 3)  # 256 colours: an 8-bit PNG; 1 colour: a 1-bit one
            im.putdata([i % palette for i in range(size[0] * size[1])])
        im.save(buf, "PNG", **kw)
        return buf.getvalue()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def pillow(contents):
        with Image.open(io.BytesIO(contents)) as im:
            return im.size + (im.mode,)

    plain = [png(m) for m in ("L", "RGB", "LA", "RGBA")] + [png("P", palette=256), png("RGB", transparency=(1, 2, 3))]
    for contents in plain:
        assert imagefile._plain_png(contents) == pillow(contents)
        info = imagefile.probe_bytes(contents)
        assert info.ok and (info.width, info.height, info.mode, info.orientation) == pillow(contents) + (1,)
    text = PngImagePlugin.PngInfo()
    text.add_itxt("comment", "an iTXt chunk")
    rgb = png("RGB")
    bad_crc = rgb[:29] + bytes([rgb[29] ^ 1]) + rgb[30:]
    unknown = rgb[:33] + chunk(b"zzZz", b"data") + rgb[33:]
    exif = Image.Exif()
    exif[0x0112] = 6
    interlaced = rgb[:8] + chunk(b"IHDR", rgb[16:28] + b"\1") + rgb[33:]
    assert pillow(interlaced) == (9, 7, "RGB")
    others = [png("I;16"), png("1"), png("P"), interlaced, bad_crc, unknown, png("RGB", exif=exif.tobytes()),
              png("RGB", pnginfo=text), rgb[:40]]
    for contents in others:
        assert imagefile._plain_png(contents) is None
    # what they give is Pillow's answer, as before
    assert imagefile.probe_bytes(png("RGB", exif=exif.tobytes())).orientation == 6
    assert imagefile.probe_bytes(png("I;16")).mode == "I;16"
    assert imagefile.probe_bytes(bad_crc).reason.startswith("cannot decode: broken PNG header")
    assert not imagefile.probe_bytes(png("RGB", (2, 2))).ok  # below the minimum side
    tiny = png("RGB", (3, 30))
    assert imagefile._plain_png(tiny) == (3, 30, "RGB") and "below the 4-pixel minimum" in imagefile.probe_bytes(tiny).reason
