"""tf.distribute for train and finetune: which strategy runs, which shard of the files each worker decodes, who
writes the outputs, and the training loop for several workers, where Keras fit fails (keras-team/keras#20585).

default trains with Keras fit. mirrored and multiworker run `fit_loop` below (Keras fit fails under both): each
global batch is split over the replicas and the gradients are all-reduced every step. Under multiworker every
worker reads only its shard of the files, the validation probabilities are summed into one array (each image
counted once), and only the chief writes the run directory; another worker writes into a temporary folder it
removes at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from imgclass_cli import fs
from imgclass_cli._tf import keras, tf
from imgclass_cli.config import COLLECTIVE_TIMEOUT_SECONDS, Strategy, TrainConfig
from imgclass_cli.errors import ImgclassError, first_line

TIMEOUT_ENV = "IMGCLASS_COLLECTIVE_TIMEOUT"
_SEE = "see docs/scaling.md"


@dataclass
class Cluster:
    """This process's place in TF_CONFIG's cluster: `index` counts the chief first, then the workers (the order
    of MultiWorkerMirroredStrategy's input pipelines)."""

    tasks: int
    index: int
    task: str  # "chief 0", "worker 1"

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def cluster_from_env(environ=os.environ) -> Cluster | None:
    """TF_CONFIG, validated without TensorFlow; None when it is unset or names a single task."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        cfg = fs.parse_json(raw)
    except ValueError as e:
        raise ImgclassError(f"TF_CONFIG is not valid JSON ({e}); {_SEE}") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(v, list) and all(isinstance(a, str) for a in v)
                                                for v in cluster.values()):
        raise ImgclassError(f'TF_CONFIG: "cluster" must map task types to lists of "host:port" strings; {_SEE}')
    chiefs, workers = cluster.get("chief", []), cluster.get("worker", [])
    if len(chiefs) > 1 or set(cluster) - {"chief", "worker"}:
        raise ImgclassError(f'TF_CONFIG: only "chief" (at most one) and "worker" tasks are supported; {_SEE}')
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if task is None and len(chiefs) + len(workers) <= 1:
        return None  # a one-process cluster without a task: nothing to distribute
    if kind not in ("chief", "worker") or type(index) is not int or not 0 <= index < len(cluster.get(kind, [])):
        size = len(cluster.get(kind, [])) if isinstance(kind, str) else 0
        raise ImgclassError(f'TF_CONFIG: "task" must name this process within the cluster, e.g. {{"type": "worker", '
                            f'"index": 0}}; got {task!r:.80} for a cluster of {size} {kind or "task"}(s); {_SEE}')
    if len(chiefs) + len(workers) <= 1:
        return None
    position = index if kind == "chief" else len(chiefs) + index
    return Cluster(len(chiefs) + len(workers), position, f"{kind} {index}")


def check(requested: Strategy | str, environ=os.environ) -> Strategy:
    """The strategy as far as it can be known without TensorFlow (preflight): auto stays auto unless TF_CONFIG
    names a cluster; multiworker without one is an error."""
    requested = Strategy(requested)
    cluster = cluster_from_env(environ)
    if requested == Strategy.multiworker and cluster is None:
        raise ImgclassError("--strategy multiworker: TF_CONFIG must name a cluster of two or more processes and this "
                            f"process's task; {_SEE}")
    if requested == Strategy.auto and cluster is not None:
        return Strategy.multiworker
    return requested


def collective_timeout(environ=os.environ) -> float:
    raw = environ.get(TIMEOUT_ENV)
    if not raw:
        return COLLECTIVE_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ImgclassError(f"{TIMEOUT_ENV}={raw}: must be a number of seconds above 0")
    return value


@dataclass
class Distribution:
    kind: Strategy
    strategy: object
    replicas: int
    global_batch: int
    cluster: Cluster | None = None
    devices: list[str] = field(default_factory=list)
    # multiworker: which worker owns each (screened) sample, per split; set by screened()
    owners: dict = field(default_factory=dict)
    run_out: str = ""  # the run directory the user asked for (the chief's), named in messages

    @property
    def workers(self) -> int:
        return self.cluster.tasks if self.cluster else 1

    @property
    def worker(self) -> int:
        return self.cluster.index if self.cluster else 0

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def custom_loop(self) -> bool:
        # Keras fit fails under both: multiworker on the first step (keras-team/keras#20585), mirrored on a last
        # batch that does not split evenly over the replicas (measured: "AddN must have the same size", 4 vs 3).
        return self.kind in (Strategy.mirrored, Strategy.multiworker)

    @property
    def per_replica_batch(self) -> int:
        return self.global_batch // self.replicas

    def describe(self) -> str:
        where = (f"{self.workers} workers, {self.replicas} replicas; this process is {self.cluster.task}"
                 f"{' (the chief: it writes the run)' if self.is_chief else ' (outputs go to a temporary folder)'}"
                 if self.cluster else f"{self.replicas} replica(s) on {', '.join(self.devices) or 'the default device'}")
        return (f"strategy {self.kind.value}: {where}; global batch {self.global_batch} = {self.per_replica_batch} "
                f"per replica; learning rate not scaled (--batch-size is the global batch)")

    def record(self) -> dict:
        """What config.json records under "distribute"."""
        return {"strategy": self.kind.value, "replicas": self.replicas, "workers": self.workers,
                "global_batch": self.global_batch, "per_replica_batch": self.per_replica_batch,
                "learning_rate_scale": 1.0, "training_loop": "imgclass" if self.custom_loop else "keras fit"}

    # --- who writes -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def outputs(self, out: str):
        """The folder this process writes the run to: OUT on the chief; on another worker a temporary folder
        (its run, checkpoints and plots are copies nobody needs), removed at the end whatever happens."""
        if self.is_chief:
            yield out
            return
        tmp = tempfile.mkdtemp(prefix=f"imgclass-worker{self.worker}-")
        try:
            yield os.path.join(tmp, os.path.basename(os.path.abspath(out)))
        finally:
            fs.remove_tree(tmp)  # created just above by mkdtemp: ours

    # --- shards ---------------------------------------------------------------------------------------------

    def local(self, data):
        """The Dataset restricted to this worker's shard (every workers-th file), the same Sample objects."""
        if not self.cluster:
            return data
        return dataclasses.replace(data, splits={k: v[self.worker::self.workers] for k, v in data.splits.items()})

    def screened(self, data, local):
        """After each worker decode-checked its own shard (`local`): the full Dataset without the files any worker
        found bad (the same on every worker), remembering who owns each file."""
        if not self.cluster:
            return local
        kept = {id(s) for v in local.splits.values() for s in v}
        names = sorted(data.splits)
        flags = np.zeros(sum(len(data.splits[k]) for k in names), dtype=np.float32)
        at = 0
        for k in names:
            for i, s in enumerate(data.splits[k]):
                if i % self.workers == self.worker and id(s) not in kept:
                    flags[at + i] = 1.0
            at += len(data.splits[k])
        flags = self.all_sum(flags)
        splits, at = {}, 0
        for k in names:
            bad = flags[at:at + len(data.splits[k])] > 0
            splits[k] = [s for s, b in zip(data.splits[k], bad) if not b]
            self.owners[k] = np.array([i % self.workers for i, b in enumerate(bad) if not b], dtype=np.int64)
            at += len(data.splits[k])
        return dataclasses.replace(data, splits={k: splits[k] for k in data.splits})

    def shard(self, data):
        """This worker's files of the screened Dataset (screened() decided who owns which)."""
        if not self.cluster:
            return data
        return dataclasses.replace(data, splits={k: [s for s, o in zip(v, self.owners[k]) if o == self.worker]
                                                 for k, v in data.splits.items()})

    def positions(self, split: str, n: int) -> np.ndarray:
        """The rows of the screened split (n files) that this worker's shard holds, in order."""
        if not self.cluster:
            return np.arange(n)
        return np.flatnonzero(self.owners[split] == self.worker)

    # --- collectives ----------------------------------------------------------------------------------------

    def all_sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over the workers (one contribution per worker, whatever its replica count)."""
        t = tf()
        value = t.constant(array)
        zeros = t.zeros_like(value)
        local_replicas = max(1, self.replicas // self.workers)
        per = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: value if ctx.replica_id_in_sync_group % local_replicas == 0 else zeros)
        return self.strategy.reduce(t.distribute.ReduceOp.SUM, per, axis=None).numpy()


def start(config: TrainConfig, auto_batch: bool = False) -> Distribution:
    """Create the strategy. Called before TensorFlow builds anything: MultiWorkerMirroredStrategy sets up the
    collective ops when the runtime starts, and logical devices cannot change afterwards. auto_batch: the batch
    size is imgclass's default, not the user's: rounded up to a multiple of the replicas instead of refused."""
    kind = check(config.strategy)
    cluster = cluster_from_env() if kind == Strategy.multiworker else None
    timeout = collective_timeout() if cluster else None
    t = tf()
    gpus = t.config.list_physical_devices("GPU")
    if kind == Strategy.auto:
        kind = Strategy.mirrored if len(gpus) > 1 else Strategy.default
    devices: list[str] = []
    if kind == Strategy.default:
        strategy = t.distribute.get_strategy()
    elif kind == Strategy.mirrored:
        # Every local GPU; without GPUs every logical CPU device (one, unless the machine was split with
        # tf.config.set_logical_device_configuration, as the tests do).
        strategy = t.distribute.MirroredStrategy()
        devices = [d.rsplit("/", 1)[-1] for d in strategy.extended.worker_devices]
    else:
        impl = t.distribute.experimental.CommunicationImplementation
        # RING works on CPU (NCCL needs GPUs); the timeout turns a hung peer into an error instead of a hang.
        options = t.distribute.experimental.CommunicationOptions(
            implementation=impl.AUTO if gpus else impl.RING, timeout_seconds=timeout)
        try:
            strategy = t.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except (ValueError, RuntimeError, t.errors.OpError) as e:
            raise ImgclassError(f"--strategy multiworker: cannot start the cluster from TF_CONFIG "
                                f"({first_line(e)}); {_SEE}") from None
    replicas = int(strategy.num_replicas_in_sync)
    if config.batch_size % replicas and auto_batch:
        return Distribution(kind, strategy, replicas, -(-config.batch_size // replicas) * replicas, cluster, devices)
    if config.batch_size % replicas:
        raise ImgclassError(f"--batch-size {config.batch_size}: the global batch must be a multiple of the "
                            f"{replicas} replicas of --strategy {kind.value}")
    return Distribution(kind, strategy, replicas, config.batch_size, cluster, devices)


def peer_lost(e: BaseException, dist: Distribution) -> bool:
    """A collective failed because another worker died, hung past the timeout or aborted."""
    t = tf()
    return dist.custom_loop and isinstance(e, (t.errors.UnavailableError, t.errors.DeadlineExceededError,
                                               t.errors.CancelledError, t.errors.AbortedError,
                                               t.errors.InternalError))


def peer_lost_message(e: BaseException) -> str:
    """One line for a failed collective: TensorFlow's message starts with "Graph execution error:" and a
    traceback; the reason is on the line that says what aborted the collective."""
    t = tf()
    if isinstance(e, t.errors.DeadlineExceededError):
        why = f"no answer within {collective_timeout():g} s ({TIMEOUT_ENV})"
    else:
        lines = [line.strip() for line in str(getattr(e, "message", e)).splitlines() if line.strip()]
        why = next((line for line in lines if "aborted by" in line or "Connection refused" in line),
                   lines[-1] if lines else type(e).__name__)
        why = why.split("aborted by:", 1)[-1].strip()
    return f"another worker stopped or cannot be reached ({why[:200]})"


# --- the multi-worker training loop ------------------------------------------------------------------------


@dataclass
class Validation:
    """The whole validation set: this worker predicts its own files; the probabilities are summed over the
    workers into one array where each image has exactly one row."""

    local: object | None  # this worker's batched (x, y) dataset, in order
    labels: np.ndarray  # every worker's labels, in the screened order
    positions: np.ndarray  # the rows of `labels` this worker predicts


def validate(dist: Distribution, model, val: Validation, num_classes: int) -> np.ndarray:
    """Probabilities for every validation image, the same array on every worker."""
    from imgclass_cli.run.inference import predict_probs

    full = np.zeros((len(val.labels), num_classes), dtype=np.float32)
    if val.local is not None:
        _, probs = predict_probs(model, val.local)
        full[val.positions] = probs
    return dist.all_sum(full)


def val_logs(loss_fn, labels: np.ndarray, probs: np.ndarray) -> dict:
    per = np.asarray(loss_fn(labels, probs))
    return {"val_accuracy": float(np.mean(np.argmax(probs, -1) == labels)), "val_loss": float(np.mean(per))}


def fit_loop(dist: Distribution, model, train, val: Validation | None, *, loss_fn, optimizer, class_weights,
             epochs: int, initial_epoch: int, steps: int, callbacks: list, num_classes: int) -> None:
    """Keras fit's contract (the same callbacks and logs) for MirroredStrategy and MultiWorkerMirroredStrategy.

    train: this worker's batched dataset at the per-replica batch; it is repeated and cut into full batches, and
    every worker runs `steps` steps an epoch (the collectives need the same count everywhere). loss_fn returns
    per-sample losses (reduction=None); the step loss is their mean over the global batch, as fit's.
    """
    t = tf()
    strategy = dist.strategy
    b = dist.per_replica_batch
    ds = train.unbatch().repeat().batch(b, drop_remainder=True).prefetch(t.data.AUTOTUNE)
    batches = iter(strategy.distribute_datasets_from_function(lambda ctx: ds))
    weights = None
    if class_weights:
        weights = t.constant([class_weights[i] for i in range(num_classes)], dtype=t.float32)
    variables = model.trainable_variables
    if not optimizer.built:  # here, not lazily inside the tf.function: MirroredStrategy fails on that
        optimizer.build(variables)
    SUM = t.distribute.ReduceOp.SUM

    def step(x, y):
        with t.GradientTape() as tape:
            probs = model(x, training=True)
            per = loss_fn(y, probs)
            classes = t.cast(y if len(y.shape) == 1 else t.argmax(y, -1), t.int32)  # mixed labels: their largest
            if weights is not None:
                per = per * t.gather(weights, classes)
            loss = t.nn.compute_average_loss(per, global_batch_size=dist.global_batch)
            if model.losses:
                loss += t.nn.scale_regularization_loss(t.add_n(model.losses))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        hit = t.equal(t.cast(t.argmax(probs, -1), t.int32), classes)
        return loss, t.reduce_sum(t.cast(hit, t.float32))

    @t.function
    def train_step(iterator):
        loss, hits = strategy.run(step, args=next(iterator))
        return strategy.reduce(SUM, loss, axis=None), strategy.reduce(SUM, hits, axis=None)

    cbs = keras().callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        loss_sum = hits = 0.0
        for i in range(steps):
            loss, hit = train_step(batches)
            loss_sum += float(loss)
            hits += float(hit)
            cbs.on_train_batch_end(i, {"accuracy": hits / ((i + 1) * dist.global_batch), "loss": loss_sum / (i + 1)})
        logs = {"accuracy": hits / (steps * dist.global_batch), "loss": loss_sum / steps}
        if val is not None:
            logs.update(val_logs(loss_fn, val.labels, validate(dist, model, val, num_classes)))
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()

