"""Which backbone layers train in each fine-tuning phase, and the recompile between phases.

Phase 1: the whole backbone is frozen; only the head (dropout + classifier) trains.
Phase 2: the top of the backbone (`--unfreeze N` layers or `--unfreeze-from LAYER`) trains too, at the
learning rate times `--finetune-lr-scale`; BatchNorm layers stay frozen (trainable=False keeps them in
inference mode in Keras 3, and the backbone is called with training=False anyway), so their statistics
learnt on the pretraining data are not destroyed by small fine-tuning batches.
"""

from __future__ import annotations

from imgclass_cli._tf import keras
from imgclass_cli.errors import ImgclassError
from imgclass_cli.model.parts import parts


def _has_weights(layer) -> bool:
    return bool(layer.weights)


def is_batchnorm(layer) -> bool:
    return isinstance(layer, keras().layers.BatchNormalization)


def unfrozen_layers(backbone, unfreeze: int = 0, unfreeze_from: str | None = None) -> list:
    """The backbone layers phase 2 trains: the top N layers, or every layer from `unfreeze_from` up.

    N counts the backbone's layers (as `backbone.layers` lists them, Input excluded), like the Keras
    transfer-learning guide. BatchNorm layers are in the range but are kept frozen by `set_phase`.
    """
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras().layers.InputLayer)]
    if unfreeze_from:
        names = [layer.name for layer in layers]
        if unfreeze_from not in names:
            import difflib

            close = difflib.get_close_matches(unfreeze_from, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ImgclassError(f"--unfreeze-from {unfreeze_from}: no such layer in {backbone.name}{hint}")
        return layers[names.index(unfreeze_from):]
    if unfreeze < 0:
        raise ImgclassError(f"--unfreeze must be 0 or more; got {unfreeze}")
    if unfreeze > len(layers):
        raise ImgclassError(f"--unfreeze {unfreeze}: the backbone has only {len(layers)} layers")
    return layers[len(layers) - unfreeze:] if unfreeze else []


def set_phase(model, phase: int, unfreeze: int = 0, unfreeze_from: str | None = None):
    """Set trainable flags for phase 1 or 2 and return the list of backbone layers that train."""
    base = parts(model).backbone
    if phase == 1:
        base.trainable = False
        return []
    top = unfrozen_layers(base, unfreeze, unfreeze_from)
    if not any(_has_weights(layer) and not is_batchnorm(layer) for layer in top):
        raise ImgclassError("phase 2 would unfreeze no layer with weights; raise --unfreeze or pick another --unfreeze-from")
    base.trainable = True  # a container's flag overrides its children's: set it first, then each layer
    ids = {id(layer) for layer in top}
    for layer in base.layers:
        layer.trainable = id(layer) in ids and not is_batchnorm(layer)
    return [layer for layer in top if layer.trainable]
