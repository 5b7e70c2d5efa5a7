"""The report evaluate writes beside metrics.json: report.html (one self-contained page) and mistakes.png (its
gallery as one picture). It reuses the evaluation's one forward pass (paths, labels, probabilities); only the
gallery's images are read again, for their Grad-CAM heatmaps."""

from __future__ import annotations

import os

import numpy as np

from imgclass_cli import files, fs
from imgclass_cli.errors import ImgclassError
from imgclass_cli.report import evalpage
from imgclass_cli.run import rundir


def choose(y_true, probs, n: int) -> tuple[list[int], dict[int, list[int]]]:
    """(the n most confident mistakes, {true class: its most confident mistakes}) as indices into the evaluation.
    Per class: max(1, n // classes) each, the classes with the most mistakes first, up to n images in all, so a
    class whose mistakes are all unsure ones still shows; ties keep the evaluation's order."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    if n <= 0 or len(y_true) == 0:
        return [], {}
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != y_true)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    per_class: dict[int, list[int]] = {}
    for i in wrong:
        per_class.setdefault(int(y_true[i]), []).append(int(i))
    each = max(1, n // probs.shape[1])
    chosen, left = {}, n
    for c in sorted(per_class, key=lambda c: (-len(per_class[c]), c)):
        if left <= 0:
            break
        chosen[c] = per_class[c][:min(each, left)]
        left -= len(chosen[c])
    return [int(i) for i in wrong[:n]], chosen


def _pictures(run_path: str, paths: list[str], indices: list[int], batch_size: int) -> tuple[dict, str]:
    """{index: (image at display size, heatmap or None, note)} for the chosen images, and a note for the page when
    there are no heatmaps at all. Grad-CAM of the predicted class, in batches."""
    from imgclass_cli.model import gradcam
    from imgclass_cli.report import overlays
    from imgclass_cli.run.explain import read_picture

    if not indices:
        return {}, ""
    model, info = rundir.load(run_path)
    try:
        cam = gradcam.GradCam(model)
        note = ""
    except ImgclassError as e:
        cam, note = None, f"no heatmaps: {e.message}"
    shown = {}
    for at in range(0, len(indices), batch_size):
        pictures = {}
        for i in indices[at:at + batch_size]:
            try:
                pictures[i] = read_picture(paths[i], info.image_size)
            except ImgclassError as e:  # e.g. a record of a TFRecord folder: not a file to read again
                shown[i] = (None, None, f"no picture: {e.message}")
        if not pictures:
            continue
        maps = cam.maps(np.stack([p.model_input for p in pictures.values()]))[0] if cam is not None else None
        for k, (i, picture) in enumerate(pictures.items()):
            h, w = overlays.display_size(*picture.upright.shape[:2])
            image = overlays.resized(picture.upright, h, w)
            shown[i] = (image, gradcam.upsample(maps[k], h, w) if maps is not None else None, "")
    return shown, note


def gallery(run_path: str, evaluation, n: int, batch_size: int) -> evalpage.Gallery:
    names = evaluation.report.class_names
    overall, by_class = choose(evaluation.y_true, evaluation.probs, n)
    indices = list(dict.fromkeys([*overall, *(i for ids in by_class.values() for i in ids)]))
    shown, note = _pictures(run_path, evaluation.paths, indices, batch_size)

    def mistake(i: int) -> evalpage.Mistake:
        p = evaluation.probs[i]
        top = int(np.argmax(p))
        image, heat, why = shown[i]
        return evalpage.Mistake(evaluation.paths[i], names[int(evaluation.y_true[i])], names[top], float(p[top]),
                                image, heat, why)

    return evalpage.Gallery([mistake(i) for i in overall],
                            {names[c]: [mistake(i) for i in ids] for c, ids in by_class.items()}, n, note)


def _beside(folder: str, name: str) -> bytes | None:
    try:
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def write(folder: str, evaluation, metrics: dict, run_path: str, config, title: str = "", warn=None) -> list[str]:
    """Write report.html and mistakes.png into folder (beside metrics.json and the figures evaluate wrote there
    first); returns their paths. The reliability diagram is shown when this evaluation has calibration metrics.
    A report that cannot be drawn warns and returns [] (the evaluation stands); a full disk still fails."""
    try:
        return _write(folder, evaluation, metrics, run_path, config, title)
    except (fs.WriteFailed, KeyboardInterrupt):
        raise
    except Exception as e:  # a drawing problem must not throw away an evaluation whose metrics are written
        if warn is not None:
            warn(f"could not write {files.REPORT_HTML} and {files.MISTAKES_PNG}: {type(e).__name__}: {e}")
        return []


def _write(folder: str, evaluation, metrics: dict, run_path: str, config, title: str) -> list[str]:
    shown = gallery(run_path, evaluation, config.gallery, config.batch_size)
    reliability = _beside(folder, files.RELIABILITY_PNG) if "ece" in metrics else None
    page = evalpage.page(metrics, title or "imgclass evaluate", _beside(folder, files.CONFUSION_PNG), reliability,
                         shown)
    html_path, png_path = os.path.join(folder, files.REPORT_HTML), os.path.join(folder, files.MISTAKES_PNG)
    fs.write_files_atomic({html_path: page.encode("utf-8"), png_path: evalpage.mistakes_png(shown, title)})
    return [html_path, png_path]
