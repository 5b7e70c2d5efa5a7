"""`imgclass explain RUN IMAGE...`: Grad-CAM of each image (model/gradcam.py) written as NAME.png (the image and
its heatmap overlay side by side) and NAME.npy (the heatmap at the image's own size), one record per image.

Everything that can be refused is refused before the model loads and before anything is written: an unknown
--class, a missing or undecodable image, an output file of the user's. The images are decoded like predict decodes
them (data/imagefile.decode, EXIF orientation applied)."""

from __future__ import annotations

import difflib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from imgclass_cli import files, fs
from imgclass_cli.config import ExplainConfig
from imgclass_cli.errors import ImgclassError
from imgclass_cli.run import rundir

NAME_LIMIT = 80  # characters of an output name (the file's stem): far below any file system's 255 bytes
_UNSAFE = re.compile(r"[^\w.\-]")  # \w is Unicode: letters and digits of any script stay


@dataclass
class Picture:
    """One image as explain and the report use it."""

    path: str
    model_input: np.ndarray  # uint8 (S, S, 3): exactly what predict feeds the model
    upright: np.ndarray  # uint8 (H, W, 3): the image at its own size, EXIF orientation applied


def _read(path: str):
    """(bytes, header info) of an image file; an ImgclassError naming it when it is not an image we read."""
    from imgclass_cli.data import imagefile

    try:
        with open(path, "rb") as f:
            contents = f.read()
    except OSError as e:
        raise ImgclassError(f"{path}: cannot read it ({e.strerror or e})") from None
    info = imagefile.probe_bytes(contents, path)
    if not info.ok:
        raise ImgclassError(f"{path}: {info.reason}")
    return contents, info


def check_image(path: str) -> None:
    """The header and a decode of one image, as the decode check of training does: exit 2 naming the file."""
    from imgclass_cli.data import imagefile

    contents, info = _read(path)
    error = imagefile.decode_error(contents, info.orientation)
    if error:
        raise ImgclassError(f"{path}: {error}")


def read_picture(path: str, image_size: int) -> Picture:
    """Read and decode one image file; an ImgclassError naming the file when it cannot be (exit 2)."""
    from imgclass_cli._tf import tf
    from imgclass_cli.data import imagefile

    t = tf()
    contents, info = _read(path)
    try:
        data = t.constant(contents)
        square = imagefile.decode(data, image_size, info.orientation).numpy()
        upright = imagefile.decode_upright(data, info.orientation)
    except (t.errors.InvalidArgumentError, t.errors.OpError) as e:
        raise ImgclassError(f"{path}: cannot decode: {imagefile.clean_tf_message(getattr(e, 'message', str(e)))}") \
            from None
    return Picture(path, square, upright)


def output_names(paths: list[str]) -> list[str]:
    """One output name per input, from its file name: characters other than letters, digits, '.', '-' and '_'
    become '_', no leading dot (no hidden files, never the marker), at most NAME_LIMIT characters; a name already
    taken (compared ignoring case, for macOS and Windows file systems) gets -2, -3, ... in input order."""
    taken: set[str] = set()
    names = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        base = _UNSAFE.sub("_", stem)
        base = ("_" + base[1:] if base.startswith(".") else base)[:NAME_LIMIT] or "image"
        name, k = base, 1
        while name.lower() in taken:
            k += 1
            name = f"{base}-{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def class_index(name: str | None, class_names: list[str], run_path: str) -> int | None:
    """--class NAME -> its index in the run's labels (None: the predicted class); an unknown name is exit 2."""
    if name is None:
        return None
    if name in class_names:
        return class_names.index(name)
    close = difflib.get_close_matches(name, class_names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
    raise ImgclassError(f"--class {name}: not a class of {run_path} ({hint}its classes: {shown})")


def _inputs(images: list[str]) -> list[str]:
    """Files as given, folders walked (images only, sorted, like predict); each path once, in input order."""
    from imgclass_cli.data import folders

    found: dict[str, None] = {}
    for arg in images:
        if os.path.isdir(arg):
            for p in folders.walk_images(arg, []):
                found.setdefault(os.path.normpath(p))
        elif os.path.lexists(arg):
            found.setdefault(os.path.normpath(arg))
        else:
            raise ImgclassError(f"{arg}: no such file or folder")
    if not found:
        raise ImgclassError(f"nothing to explain: {' '.join(images)} named no image files")
    return list(found)


@dataclass
class ExplainJob:
    records: Iterator[dict]  # one per image, in input order, as each is written
    out: str
    total: int


def start(run_path: str, images: list[str], config: ExplainConfig, progress=None) -> ExplainJob:
    """Check everything, then return the job whose records explain each image (progress(done) per image)."""
    info = rundir.read_info(run_path)
    wanted = class_index(config.class_name, info.class_names, run_path)
    paths = _inputs(images)
    out = config.out or os.path.join(run_path, files.EXPLAIN_DIR)
    names = output_names(paths)
    targets = [(os.path.join(out, n + ".png"), os.path.join(out, n + ".npy")) for n in names]
    fs.check_replaceable(out, [p for pair in targets for p in pair])  # writable; no file of the user's replaced
    for path in paths:  # every image is checked before anything is written
        check_image(path)
    return ExplainJob(_records(run_path, info, paths, targets, wanted, out, config.batch_size, progress), out,
                      len(paths))


def _records(run_path, info, paths, targets, wanted, out, batch_size, progress) -> Iterator[dict]:
    from imgclass_cli.model.gradcam import GradCam

    model, _ = rundir.load(run_path)
    try:
        cam = GradCam(model)
    except ImgclassError as e:
        raise ImgclassError(f"{os.path.join(run_path, files.MODEL)}: {e.message}") from None
    os.makedirs(out, exist_ok=True)
    done = 0
    for start_at in range(0, len(paths), batch_size):
        batch = slice(start_at, start_at + batch_size)
        pictures = [read_picture(p, info.image_size) for p in paths[batch]]
        maps, probs, chosen = cam.maps(np.stack([p.model_input for p in pictures]),
                                       None if wanted is None else wanted)
        fs.record(out, [p for pair in targets[batch] for p in pair])  # claimed before written: never left unowned
        for picture, (png_path, npy_path), m, prob, c in zip(pictures, targets[batch], maps, probs, chosen):
            yield _explain_one(picture, m, prob, int(c), info.class_names, png_path, npy_path)
            done += 1
            if progress is not None:
                progress(done)


def _explain_one(picture: Picture, cam_map, prob, explained: int, class_names, png_path, npy_path) -> dict:
    from imgclass_cli.model import gradcam
    from imgclass_cli.report import overlays

    h, w = picture.upright.shape[:2]
    heat = gradcam.upsample(cam_map, h, w)
    top = int(np.argmax(prob))
    label, confidence = class_names[top], float(prob[top])
    lines = [picture.path, f"predicted {label} ({confidence:.3f})",
             f"Grad-CAM of {class_names[explained]} ({float(prob[explained]):.3f})"]
    buf = io.BytesIO()
    np.save(buf, heat.astype(np.float32), allow_pickle=False)
    fs.write_files_atomic({png_path: overlays.explain_png(picture.upright, heat, lines), npy_path: buf.getvalue()})
    return {"path": picture.path, "label": label, "confidence": confidence, "class": class_names[explained],
            "class_confidence": float(prob[explained]), "peak": gradcam.peak(cam_map, h, w), "png": png_path,
            "npy": npy_path}
