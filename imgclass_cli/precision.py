"""Which numeric precision a command computes in: the Keras dtype policy chosen from a description of the machine's
devices (`choose`, a pure function, so tests can describe any GPU or CPU), the sentence that explains it, and the
refusal of a precision this machine would only emulate. No TensorFlow at import; `describe_machine` asks TensorFlow
about GPUs when it runs."""

from __future__ import annotations

from dataclasses import dataclass

from imgclass_cli.config import Precision
from imgclass_cli.errors import ImgclassError

FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16 = "float32", "mixed_bfloat16", "mixed_float16"
# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic: oneDNN runs bfloat16 matrix products on them.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
BF16_GPU, FP16_GPU = (8, 0), (7, 0)  # compute capabilities with bfloat16 (Ampere) and float16 (Volta) tensor cores


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int] | None  # None when the driver does not say


@dataclass(frozen=True)
class Machine:
    """What the precision depends on: the CPU's flags and the GPUs TensorFlow sees (which run the model if any)."""

    cpu_flags: frozenset[str] = frozenset()
    gpus: tuple[Gpu, ...] = ()

    @property
    def bf16_cpu_flags(self) -> list[str]:
        return [f for f in BF16_CPU_FLAGS if f in self.cpu_flags]

    @property
    def gpu_capability(self) -> tuple[int, int]:
        """The lowest compute capability of the GPUs (every replica must run the policy); (0, 0) when unknown."""
        return min((g.compute_capability or (0, 0) for g in self.gpus), default=(0, 0))

    def describe_gpus(self) -> str:
        cap = self.gpu_capability
        names = ", ".join(sorted({g.name for g in self.gpus}))
        return f"GPU {names} (compute capability {cap[0]}.{cap[1]})" if cap != (0, 0) else f"GPU {names}"


@dataclass(frozen=True)
class Choice:
    requested: str  # the --precision value
    policy: str  # the Keras dtype policy: float32, mixed_bfloat16 or mixed_float16
    why: str
    fixed: bool = False  # the model computes as it was exported: --precision does not change it

    @property
    def mixed(self) -> bool:
        return self.policy != FLOAT32

    @property
    def loss_scaling(self) -> bool:
        """float16 needs Keras' loss scaling (keras.optimizers.LossScaleOptimizer); bfloat16 has float32's range."""
        return self.policy == MIXED_FLOAT16

    def line(self) -> str:
        if self.fixed:
            return f"precision {self.policy} ({self.why})"
        how = "--precision sets it" if self.requested == Precision.auto.value else f"--precision {self.requested}"
        return f"precision {self.policy} ({self.why}; {how})"

    def record(self) -> dict:
        return {"requested": self.requested, "policy": self.policy, "why": self.why}


def supported(machine: Machine) -> list[str]:
    """The --precision values this machine runs natively, each with what provides it."""
    found = ["float32"]
    if machine.gpus:
        cap = machine.gpu_capability
        if cap >= BF16_GPU:
            found.append(f"bfloat16 ({machine.describe_gpus()})")
        if cap >= FP16_GPU:
            found.append(f"float16 ({machine.describe_gpus()})")
    elif machine.bf16_cpu_flags:
        found.append(f"bfloat16 (CPU: {', '.join(machine.bf16_cpu_flags)})")
    return found


def choose(requested: Precision | str, machine: Machine) -> Choice:
    """The dtype policy for `requested` on `machine`. With GPUs the GPUs decide (they run the model), else the CPU.
    auto: bfloat16 on GPUs of compute capability 8.0 and up and on CPUs with AMX-BF16 or AVX512-BF16, float16 on
    7.x GPUs, else float32. bfloat16 or float16 where the hardware lacks it: an ImgclassError (exit 2) naming what
    this machine supports, rather than a run through emulated arithmetic many times slower."""
    requested = Precision(requested)
    cap, gpus = machine.gpu_capability, bool(machine.gpus)
    bf16 = cap >= BF16_GPU if gpus else bool(machine.bf16_cpu_flags)
    fp16 = gpus and cap >= FP16_GPU
    where = machine.describe_gpus() if gpus else "this CPU"
    if requested == Precision.float32:
        return Choice(requested.value, FLOAT32, "as requested")
    if requested == Precision.bfloat16:
        if not bf16:
            raise _unsupported(requested, machine, "a GPU of compute capability 8.0 or higher, or a CPU with "
                               "amx_bf16 or avx512_bf16")
        return Choice(requested.value, MIXED_BFLOAT16, _bf16_why(machine))
    if requested == Precision.float16:
        if not fp16:
            raise _unsupported(requested, machine, "a GPU of compute capability 7.0 or higher (CPUs emulate it)")
        return Choice(requested.value, MIXED_FLOAT16, f"{where} has float16 tensor cores; Keras' loss scaling on")
    if bf16:
        return Choice(requested.value, MIXED_BFLOAT16, _bf16_why(machine))
    if fp16:
        return Choice(requested.value, MIXED_FLOAT16, f"{where} has float16 tensor cores; Keras' loss scaling on")
    reason = (f"{machine.describe_gpus()} has no tensor cores" if gpus
              else f"this CPU has neither {' nor '.join(BF16_CPU_FLAGS)}")
    return Choice(requested.value, FLOAT32, reason)


def _bf16_why(machine: Machine) -> str:
    if machine.gpus:
        return f"{machine.describe_gpus()} has bfloat16 tensor cores"
    return f"this CPU has {' and '.join(machine.bf16_cpu_flags)}"


def _unsupported(requested: Precision, machine: Machine, needs: str) -> ImgclassError:
    return ImgclassError(f"--precision {requested.value} needs {needs}; this machine supports "
                         f"{', '.join(supported(machine))} (use --precision auto to pick the fastest)")


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where the file does not exist or says nothing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


_MACHINE: list = []


def describe_machine() -> Machine:
    """This machine: the CPU's flags and the GPUs TensorFlow sees, with their compute capability (asked once)."""
    if not _MACHINE:
        from imgclass_cli._tf import tf

        t = tf()
        gpus = []
        for device in t.config.list_physical_devices("GPU"):
            details = t.config.experimental.get_device_details(device)
            gpus.append(Gpu(details.get("device_name", device.name), details.get("compute_capability")))
        _MACHINE.append(Machine(cpu_flags(), tuple(gpus)))
    return _MACHINE[0]


def resolve(requested: Precision | str) -> Choice:
    """`choose` on this machine."""
    return choose(requested, describe_machine())
