"""prepare --from-tfds: a tensorflow-datasets image classification dataset -> OUT/<split>/<class>/<n>.png."""

from __future__ import annotations

import os

from imgclass_cli import files, fs
from imgclass_cli.errors import ImgclassError, first_line



def _safe(name: str) -> str:
    return name.replace(os.sep, "_").replace("\0", "_").strip() or "_"


def write_dataset(spec: str, out: str, *, data_dir: str | None = None, force: bool = False) -> tuple[dict[str, int], list[str]]:
    """Write NAME[:SPLIT] (all splits when none is given) as class folders named from features['label'].names.

    Returns ({split: images written}, class names). An unavailable download is one ImgclassError (exit 2).
    """
    from imgclass_cli._tf import tf

    tf()
    import tensorflow_datasets as tfds
    from PIL import Image

    name, _, split = spec.partition(":")
    fs.check_out(out, force, fs.TFDS)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise ImgclassError(f"--from-tfds {name}: {first_line(e)}") from None
    features = builder.info.features
    label_key = "label" if "label" in features else None
    image_key = "image" if "image" in features else None
    if label_key is None or image_key is None or not hasattr(features[label_key], "names"):
        raise ImgclassError(f"--from-tfds {name}: not an image classification dataset (needs 'image' and a "
                            f"ClassLabel 'label' feature; it has {', '.join(features.keys())})")
    names = [_safe(n) for n in features[label_key].names]
    try:
        builder.download_and_prepare()
    except Exception as e:  # offline: a DownloadError / ConnectionError deep inside tfds
        where = data_dir or "~/tensorflow_datasets"
        raise ImgclassError(f"--from-tfds {name}: cannot download or prepare it ({first_line(e)}); connect to the "
                            f"internet once, or put the prepared dataset in {where} (--data-dir)") from None
    splits = [split] if split else sorted(builder.info.splits.keys())
    if not splits:
        raise ImgclassError(f"--from-tfds {name}: its splits are unknown; name one, e.g. --from-tfds {name}:train")
    counts: dict[str, int] = {}
    with fs.locked(out), fs.staged(out, force, fs.TFDS) as tmp:
        for sp in splits:
            try:
                ds = builder.as_dataset(split=sp)
            except Exception as e:
                raise ImgclassError(f"--from-tfds {name}: split {sp!r}: {first_line(e)} "
                                    f"(splits: {', '.join(sorted(builder.info.splits.keys()))})") from None
            folder = {"validation": "val"}.get(sp.split("[")[0], sp.split("[")[0])
            n = 0
            for ex in tfds.as_numpy(ds):
                img, label = ex[image_key], int(ex[label_key])
                if img.ndim == 3 and img.shape[-1] == 1:
                    img = img[..., 0]
                d = os.path.join(tmp, folder, names[label])
                os.makedirs(d, exist_ok=True)
                Image.fromarray(img).save(os.path.join(d, f"{name}-{folder}-{n:06d}.png"))
                n += 1
            counts[folder] = n
        fs.write_text_atomic(os.path.join(tmp, files.SOURCE_TXT),
                             f"imgclass export of tensorflow-datasets: {spec} (tfds {tfds.__version__})\nclasses: {', '.join(names)}\n")
    return counts, names
