from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgclass_cli.data import pipeline
from imgclass_cli.config import Augment
from imgclass_cli.data.folders import Sample


def _decode_file(path, size=8):
    return pipeline.decode(open(path, "rb").read(), size).numpy()


def test_decode_formats_to_rgb(tmp_path):
    Image.new("L", (10, 6), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (10, 6), (10, 20, 30, 0)).save(tmp_path / "a.png")
    Image.new("P", (10, 6)).save(tmp_path / "p.gif")
    Image.new("RGB", (10, 6), (200, 0, 0)).save(tmp_path / "b.bmp")
    frames = [Image.new("RGB", (6, 6), c) for c in ((0, 255, 0), (255, 0, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    for name in ("g.png", "a.png", "p.gif", "b.bmp", "anim.gif"):
        img = _decode_file(tmp_path / name)
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8, name
    assert (_decode_file(tmp_path / "g.png") == 128).all()
    assert tuple(_decode_file(tmp_path / "a.png")[0, 0]) == (10, 20, 30)
    assert tuple(_decode_file(tmp_path / "b.bmp")[0, 0]) == (200, 0, 0)
    g = _decode_file(tmp_path / "anim.gif")[0, 0]
    assert g[1] > 200 and g[0] < 50  # the first frame


def test_build_batches_and_shuffles_with_seed(tmp_path):
    samples = []
    for i in range(10):
        Image.new("RGB", (12, 12), (i * 20, 0, 0)).save(tmp_path / f"{i}.png")
        samples.append(Sample(str(tmp_path / f"{i}.png"), i % 2))
    spec = pipeline.PipelineSpec(image_size=8, batch_size=4, seed=3, augment=Augment.none)
    batches = list(pipeline.build(samples, spec, training=False))
    assert [int(x.shape[0]) for x, _ in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype.name == "float32" and float(x[1, 0, 0, 0]) == 20.0 and list(y.numpy()) == [0, 1, 0, 1]

    def epochs(s, n=2):
        """The image order of n epochs of one training dataset."""
        ds = pipeline.build(samples, s, training=True)
        return [[int(v) for x, _ in ds for v in x[:, 0, 0, 0].numpy() / 20] for _ in range(n)]

    first, second = epochs(spec)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != list(range(10))  # shuffled ...
    assert first != second  # ... anew every epoch ...
    assert epochs(spec) == [first, second]  # ... and the same sequence for the same seed
    assert epochs(pipeline.PipelineSpec(image_size=8, batch_size=4, seed=4, augment=Augment.none)) != [first, second]
    assert [int(v) for x, _ in batches for v in x[:, 0, 0, 0].numpy() / 20] == list(range(10))  # evaluation: in order


def test_iter_batches_keeps_order_and_reports_errors(tmp_path):
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "ok.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "trunc.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    paths = [str(tmp_path / n) for n in ("ok.png", "empty.jpg", "missing.png", "trunc.jpg", "ok.png")]
    batches = list(pipeline.iter_batches(paths, 4, batch_size=2))
    assert [b.paths for b in batches] == [paths[:2], paths[2:4], paths[4:]]
    ok = [o for b in batches for o in b.ok]
    assert ok == [True, False, False, False, True]
    errors = [e for b in batches for e in b.errors]
    assert errors[1] == "empty file" and "No such file" in errors[2] and "decode" in errors[3]


def test_an_image_already_at_the_size_decodes_to_exactly_what_the_models_resizing_layer_sees(tmp_path):
    """decode skips the resize for an image at the target size; that is only right while the antialiased bilinear
    resize (the Resizing layer inside every saved model) maps such an image to itself, for any pixel values and
    EXIF orientation."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for size in (7, 28, 33):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "x.png")
        contents = open(tmp_path / "x.png", "rb").read()
        resized = tf.image.resize(pixels, [size, size], antialias=True)
        assert np.array_equal(np.round(resized.numpy()), pixels), size
        assert np.array_equal(pipeline.decode(contents, size).numpy(), pixels), size
        assert np.array_equal(pipeline.decode(contents, size, 6).numpy(), np.rot90(pixels, 3)), size
        # one pixel wider: resized, no longer the same pixels
        wide = np.concatenate([pixels, pixels[:, :1]], axis=1)
        Image.fromarray(wide).save(tmp_path / "w.png")
        assert pipeline.decode(open(tmp_path / "w.png", "rb").read(), size).shape == (size, size, 3)


@pytest.mark.parametrize("first_chunk", [1024, 2])
def test_decode_all_reports_failures_side_by_side_and_last_and_decodes_every_other_file(tmp_path, monkeypatch,
                                                                                      first_chunk):
    """Corrupt files side by side (3, 4) and last (9); the probe leaves out file 6. Every other file is decoded
    once, in its place; progress ends at n and never goes back. With first_chunk 2 the files go in chunks of 2, 4
    and 4 (the failures straddle the first boundary): the same result."""
    monkeypatch.setattr(pipeline, "FIRST_CHUNK", first_chunk)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(p)
        if i in (3, 4, 9):
            p.write_bytes(p.read_bytes()[:60])
        paths.append(str(p))
    asked, done = [], []

    def item(i):
        asked.append(i)
        return None if i == 6 else (paths[i], 1, None)

    images, failed = pipeline.decode_all(10, item, 5, keep=True, progress=lambda d, n: done.append(d))
    assert failed == [3, 4, 9] and sorted(asked) == list(range(10)) and done[-1] == 10 and done == sorted(done)
    for i in (0, 1, 2, 5, 7, 8):
        assert np.array_equal(images[i], pipeline.decode(open(paths[i], "rb").read(), 5).numpy()), i
    assert not images[6].any()


def test_decode_all_probes_the_next_chunk_while_the_one_before_decodes_and_stops_at_the_first_failure(
        tmp_path, monkeypatch):
    """Chunks of 2, 4, 8 files: the probe (item) of files 2-5 runs before any of files 0-1 is reported decoded,
    i.e. while they decode. stop_on_error: a decode failure in the second chunk (file 3) ends the pass once that
    chunk is collected; the third chunk is probed but never decoded."""
    monkeypatch.setattr(pipeline, "FIRST_CHUNK", 2)
    rng = np.random.default_rng(2)
    paths = []
    for i in range(14):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(p)
        if i == 3:
            p.write_bytes(p.read_bytes()[:60])
        paths.append(str(p))
    events = []

    def item(i):
        events.append(("probe", i))
        return paths[i], 1, None

    images, failed = pipeline.decode_all(14, item, 5, keep=True, stop_on_error=True,
                                         progress=lambda d, n: events.append(("done", d)))
    assert failed == [3]
    first_done = events.index(("done", 2))
    assert {i for kind, i in events[:first_done] if kind == "probe"} == set(range(6))
    assert ("done", 14) not in events and [i for kind, i in events if kind == "probe"] == list(range(14))
    assert images[0].any() and images[5].any() and not images[6:].any()  # chunk 3 probed, never decoded


def test_a_png_orientation_is_read_from_exif_and_xmp_and_a_plain_png_is_upright(tmp_path):
    from PIL import PngImagePlugin

    from imgclass_cli.data.imagefile import probe_bytes

    img = Image.new("RGB", (12, 8), (1, 2, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "exif.png", exif=exif)
    meta = PngImagePlugin.PngInfo()
    meta.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>', zip=True)
    img.save(tmp_path / "xmp.png", pnginfo=meta)
    img.save(tmp_path / "plain.png")
    orientation = {n: probe_bytes(open(tmp_path / f"{n}.png", "rb").read()).orientation for n in ("exif", "xmp", "plain")}
    assert orientation == {"exif": 6, "xmp": 8, "plain": 1}
