"""``spinegpt preflight``: what would stop the paper's run on a real GPU node, found in seconds instead of days.

Every check says ``ok``, ``warn`` or ``FAIL``, what it found and the fix. Nothing trains and no data is built (the
CPU Adam op may be compiled, once, into the extensions cache). ``spinegpt run`` runs it first
(``--skip-preflight`` to opt out) and stops on a failure.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from spinegpt import model_ref
from spinegpt.data_mixes.rows import DataError
from spinegpt.train import deepspeed_configs, environment, memory, swift_adapter
from spinegpt.train.plan import Plan

Status = Literal["ok", "warn", "FAIL"]
LIGER_TESTED = ("0.6.2", "0.9")
"""liger-kernel versions known to patch Qwen2.5-VL under transformers 5 (lower bound inclusive, upper exclusive);
older releases break on transformers 5, and a fused loss that is not applied costs ~32 GiB at 16k tokens."""
NODE_LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"}
SHARED_FS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "fuse.juicefs", "wekafs", "panfs"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}

    def line(self) -> str:
        fix = f"\n        fix: {self.fix}" if self.fix and self.status != "ok" else ""
        return f"  {self.status:<4}  {self.name}: {self.detail}{fix}"


def _needs_gpu(plan: Plan) -> bool:
    """A run on GPUs: 16-bit precision, flash attention or fused kernels (the smoke curriculum runs fp32 + sdpa on
    CPU with gloo and needs none)."""
    cur = plan.curriculum
    return cur.torch_dtype != "float32" or any(
        s.stage.use_liger_kernel or (s.stage.attn_impl or cur.attn_impl) == "flash_attn" for s in plan.stages
    )


def _cuda() -> tuple[int, float | None]:
    """Visible CUDA devices and the smallest one's total memory in GiB (None without CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return 0, None
        count = torch.cuda.device_count()
        return count, min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / memory.GiB
    except Exception:  # a broken driver is "no usable GPU" here; the check says so
        return 0, None


def check_gpus(plan: Plan) -> Check:
    count, _ = _cuda()
    wanted = plan.launch.nproc_per_node
    if not _needs_gpu(plan):
        return Check("gpus", "ok", f"{count} CUDA GPU(s); this curriculum runs float32 + sdpa and needs none")
    if count >= wanted:
        return Check("gpus", "ok", f"{count} CUDA GPU(s) visible for --nproc {wanted}")
    return Check(
        "gpus",
        "FAIL",
        f"{count} CUDA GPU(s) visible, --nproc {wanted} needs {wanted}",
        "run on a GPU node (check CUDA_VISIBLE_DEVICES and nvidia-smi), or lower --nproc",
    )


CUDA12_INDEX = "https://download.pytorch.org/whl/cu126"


def _driver_cuda() -> str | None:
    """The newest CUDA the installed NVIDIA driver supports ("CUDA Version" in nvidia-smi's header), if any."""
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+\.\d+)", out)
    return match.group(1) if match else None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2])


def check_cuda(plan: Plan) -> Check:
    """torch's CUDA build against what the driver supports: the registry's torch 2.13 is built for CUDA 13, which
    needs a driver of the R580 series or newer; an older driver sees no GPU at all ("found no NVIDIA driver" or
    cuda.is_available() False), which looks like a broken node rather than a wrong wheel."""
    try:
        import torch

        built_for = torch.version.cuda
        version = torch.__version__
    except Exception as exc:  # a torch that does not import is reported here, not as a traceback
        return Check("cuda", "FAIL", f"torch does not import: {exc}", "reinstall torch (README: the GPU install)")
    driver = _driver_cuda()
    needed = _needs_gpu(plan)
    if built_for is None:
        detail = f"torch {version} is a CPU build"
        if not needed:
            return Check("cuda", "ok", f"{detail}; this curriculum runs on CPU")
        return Check("cuda", "FAIL", detail, f"pip install torch==2.13.0 (CUDA 13) or --index-url {CUDA12_INDEX}")
    if driver is None:
        status: Status = "warn" if needed else "ok"
        return Check("cuda", status, f"torch {version} is built for CUDA {built_for}; no NVIDIA driver found")
    detail = f"torch {version} is built for CUDA {built_for}; the driver supports CUDA {driver}"
    if _version(driver) < _version(built_for):
        fix = (
            f"a torch built for CUDA 12: pip install torch==2.13.0 torchvision==0.28.0 --index-url {CUDA12_INDEX}"
            ", or a newer driver (CUDA 13 needs R580+)"
        )
        return Check("cuda", "FAIL" if needed else "warn", detail + ": too old for this torch", fix)
    return Check("cuda", "ok", detail)


def check_memory(plan: Plan, nodes: int) -> list[Check]:
    count, measured = _cuda()
    cur = plan.curriculum
    if not _needs_gpu(plan) and count == 0:
        return [Check("memory", "ok", "CPU run: no GPU memory to plan")]
    nominal = 80.0 if measured is None else measured / memory.USABLE
    where = "the GPUs' own memory" if measured else "an 80 GB card (no GPU here to measure)"
    checks = []
    for stage in plan.stages:
        try:
            report = memory.stage_report(
                cur, stage.stage, plan.loaded.base_dir, plan.launch.nproc_per_node, nodes, nominal
            )
        except ValueError as exc:
            checks.append(Check(f"memory {stage.stage.name}", "warn", str(exc), "give a local model folder"))
            continue
        detail = (
            f"plans {report['total_gib']:.1f} GiB of {report['capacity_gib']:.1f} usable on {where}: "
            f"{report['verdict']}, {report['headroom_gib']:+.1f} GiB to spare"
        )
        fix = "; ".join(f"{f['fix']} ({f['setting']})" for f in report["fixes"])
        verdicts: dict[str, Status] = {"fits": "ok", "tight": "warn", "does not fit": "FAIL"}
        status = verdicts[report["verdict"]]
        checks.append(Check(f"memory {stage.stage.name}", status, detail, fix))
    return checks


def check_attention(plan: Plan) -> Check:
    """The attention each stage gets, and whether it can serve the stage: flash-attn must really load where a stage
    names it, and packing / padding_free need it (ms-swift refuses them under sdpa at engine start)."""
    cur = plan.curriculum
    chosen = {s.stage.name: swift_adapter.attention(s.stage.attn_impl or cur.attn_impl) for s in plan.stages}
    usable, why = swift_adapter.flash_attention()
    if any(impl == "flash_attn" for impl, _ in chosen.values()) and not usable:
        names = [name for name, (impl, _) in chosen.items() if impl == "flash_attn"]
        return Check(
            "attention",
            "FAIL",
            f"stages {names} use attn_impl: flash_attn, but {why}: they die at model load",
            "install flash-attn against this torch (README: the GPU install), or attn_impl: auto (sdpa without it)",
        )
    packed = [
        f"{s.stage.name} ({'packing' if s.stage.packing else 'padding_free'}: attention {chosen[s.stage.name][0]})"
        for s in plan.stages
        if (s.stage.packing or s.stage.padding_free) and chosen[s.stage.name][0] != "flash_attn"
    ]
    if packed:
        return Check(
            "attention",
            "FAIL",
            f"stage(s) {', '.join(packed)}: packing and padding_free need flash attention ({why})",
            "install flash-attn (README: the GPU install) and set attn_impl: flash_attn, or turn packing / "
            "padding_free off for those stages",
        )
    shown = {f"{impl} ({reason})" for impl, reason in chosen.values()}
    return Check("attention", "ok", "; ".join(sorted(shown)) or "no stage")


def check_parallelism(plan: Plan) -> Check:
    """Sequence parallelism as ms-swift splits it: Ulysses within the KV heads, a ring beyond them (which needs
    padding_free and flash attention); the world size must divide into groups; and the fused loss is off."""
    problems, notes = [], []
    for s in plan.stages:
        size = s.stage.sequence_parallel_size
        if size == 1:
            continue
        if plan.world_size % size:
            problems.append(f"{s.stage.name}: sequence_parallel_size {size} does not divide {plan.world_size} ranks")
            continue
        try:
            shape = memory.model_shape(plan.curriculum.model)
        except ValueError as exc:
            notes.append(f"{s.stage.name}: {exc}")
            continue
        ulysses, ring = memory.sequence_parallel_split(shape, size)
        flash = swift_adapter.attention(s.stage.attn_impl or plan.curriculum.attn_impl)[0] == "flash_attn"
        if ring > 1 and not ((s.stage.padding_free or s.stage.packing) and flash):
            possible = memory.sequence_parallel_sizes(shape, plan.world_size, ring_attention=False)
            problems.append(
                f"{s.stage.name}: sequence_parallel_size {size} is Ulysses over {ulysses} ranks (the model has "
                f"{shape.kv_heads} KV heads) and a ring over {ring}, and a ring needs padding_free with flash "
                f"attention; sizes that need no ring here: {possible or 'none'}"
            )
        if s.stage.use_liger_kernel:
            notes.append(f"{s.stage.name}: the fused loss is off under sequence parallelism (ms-swift)")
    if problems:
        return Check("parallelism", "FAIL", "; ".join(problems), "change sequence_parallel_size as said")
    return Check("parallelism", "warn" if notes else "ok", "; ".join(notes) or "no sequence parallelism")


def static_checks(plan: Plan) -> list[Check]:
    """What the curriculum itself asks that cannot run with this install (``spinegpt validate`` runs these)."""
    return [check_attention(plan), check_parallelism(plan)]


def check_liger(plan: Plan) -> Check:
    users = [s.stage.name for s in plan.stages if s.stage.use_liger_kernel]
    if not users:
        return Check("liger-kernel", "ok", "no stage uses the fused kernels")
    fix = f'pip install "liger-kernel>={LIGER_TESTED[0]},<{LIGER_TESTED[1]}" (the gpu extra)'
    try:
        version = importlib.metadata.version("liger-kernel")
    except importlib.metadata.PackageNotFoundError:
        return Check("liger-kernel", "FAIL", f"stages {users} use the fused loss; liger-kernel is not installed", fix)
    from packaging.version import Version

    if not Version(LIGER_TESTED[0]) <= Version(version) < Version(LIGER_TESTED[1]):
        return Check("liger-kernel", "FAIL", f"liger-kernel {version} is outside the tested range {LIGER_TESTED}", fix)
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2_5_vl  # noqa: F401
    except Exception as exc:
        return Check("liger-kernel", "FAIL", f"liger-kernel {version} cannot patch Qwen2.5-VL ({exc})", fix)
    return Check("liger-kernel", "ok", f"liger-kernel {version} patches Qwen2.5-VL (stages {users})")


def check_cpu_adam(plan: Plan) -> Check:
    offloading = [
        s for s in plan.stages if s.deepspeed_config and deepspeed_configs.offloads_optimizer(s.deepspeed_config)
    ]
    users = [s.stage.name for s in offloading]
    if not users:
        return Check("cpu adam", "ok", "no stage offloads the optimizer")
    fix = "apt-get install g++ ninja-build python3-dev (the op compiles on first use into $TORCH_EXTENSIONS_DIR)"
    missing = [tool for tool in ("c++", "ninja") if shutil.which(tool) is None]
    if "c++" in missing:
        return Check(
            "cpu adam", "FAIL", f"stages {users} offload the optimizer; no C++ compiler for DeepSpeedCPUAdam", fix
        )
    try:
        from deepspeed.ops.op_builder import CPUAdamBuilder

        CPUAdamBuilder().load(verbose=False)
    except Exception as exc:
        return Check("cpu adam", "FAIL", f"DeepSpeedCPUAdam does not build or load: {type(exc).__name__}: {exc}", fix)
    return Check("cpu adam", "ok", f"DeepSpeedCPUAdam loads (stages {users}); built ops are cached")


def check_model(plan: Plan) -> Check:
    cur = plan.curriculum
    ref = cur.model
    if ref.startswith(model_ref.BUILTIN_PREFIX):
        return Check("model", "ok", f"{ref}: built offline on first use")
    if model_ref.is_local(ref):
        config = Path(model_ref.resolve(ref)) / "config.json"
        if not config.is_file():
            return Check("model", "FAIL", f"{config} not found", "point `model` at a folder with config.json")
        return Check("model", "ok", f"local folder {config.parent}")
    if cur.hub == "modelscope":
        return Check(
            "model",
            "warn",
            f"{ref} comes from ModelScope at engine start (hub: modelscope)",
            "pre-download it, or hub: huggingface with a cached copy",
        )
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(ref, "config.json")
    except Exception:
        cached = None
    if isinstance(cached, str):
        return Check("model", "ok", f"{ref} is in the Hugging Face cache ({Path(cached).parent})")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return Check(
            "model",
            "FAIL",
            f"{ref} is not in the Hugging Face cache and HF_HUB_OFFLINE=1",
            f"huggingface-cli download {ref} on a machine with network, into this cache",
        )
    return Check(
        "model",
        "warn",
        f"{ref} is not in the Hugging Face cache: the engine downloads it at start",
        f"huggingface-cli download {ref} beforehand (15 GB), or make sure this node reaches the hub",
    )


def check_data(plan: Plan) -> Check:
    try:
        needed = plan.data.source_files([source for stage in plan.stages for source in stage.stage.data])
    except DataError as exc:
        return Check(
            "data", "FAIL", str(exc).splitlines()[0], "set data_root (or SPINEGPT_DATA_ROOT) to your downloads"
        )
    missing = sorted({f"{name} ({path})" for name, path in needed if not path.is_file()})
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        return Check(
            "data",
            "FAIL",
            f"{len(missing)} source file(s) missing: {shown}",
            "download them into the layout of data_mixes/sources.yaml",
        )
    return Check("data", "ok", f"{len({n for n, _ in needed})} source(s) present" if needed else "no data mixes")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(plan: Plan) -> Check:
    cur = plan.curriculum
    try:
        shape = memory.model_shape(cur.model)
    except ValueError as exc:
        return Check("disk", "warn", f"checkpoint size unknown: {exc}")
    per_stage = []
    for stage in plan.stages:
        each = memory.checkpoint_bytes(shape, memory.setting_for(stage.stage, cur, plan.loaded.base_dir))
        kept = (stage.stage.save_total_limit or 10) + 1  # one more is written before the oldest is rotated out
        per_stage.append(each * kept)
    free = shutil.disk_usage(_existing(plan.output_dir)).free
    need_run, need_stage = sum(per_stage), max(per_stage, default=0)
    detail = (
        f"{free / 1e9:,.0f} GB free in {plan.output_dir}; the run keeps up to {need_run / 1e9:,.0f} GB of "
        f"checkpoints (the largest stage {need_stage / 1e9:,.0f} GB)"
    )
    fix = "free space, another --output-dir, or a lower save_total_limit (each 7B full checkpoint is ~110 GB)"
    if free < need_stage:
        return Check("disk", "FAIL", detail, fix)
    return Check("disk", "warn" if free < need_run else "ok", detail, fix)


def _available_ram() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_host_ram(plan: Plan, nodes: int) -> Check:
    cur = plan.curriculum
    need = 0.0
    for stage in plan.stages:
        if stage.deepspeed_config and deepspeed_configs.offloads_optimizer(stage.deepspeed_config):
            try:
                report = memory.stage_report(
                    cur, stage.stage, plan.loaded.base_dir, plan.launch.nproc_per_node, nodes, 80
                )
            except ValueError:
                continue
            need = max(need, report["cpu_offload_gib_per_node"] * memory.GiB)
    if not need:
        return Check("host ram", "ok", "no stage offloads to CPU memory")
    have = _available_ram()
    if have is None:
        return Check("host ram", "warn", f"offload needs ~{need / memory.GiB:.0f} GiB per node; available unknown")
    status: Status = "ok" if have >= need else "FAIL"
    return Check(
        "host ram",
        status,
        f"offload needs ~{need / memory.GiB:.0f} GiB per node, {have / memory.GiB:.0f} GiB available",
        "a node with more memory, or more nodes (the offloaded states are sharded)",
    )


def _filesystem(path: Path) -> str | None:
    best, kind = "", None
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        return None
    return kind


def check_nodes(plan: Plan, nodes: int) -> list[Check]:
    if nodes <= 1:
        return [Check("nodes", "ok", "one node")]
    kind = _filesystem(_existing(plan.output_dir).resolve())
    shared: Status = "ok" if kind in SHARED_FS else ("FAIL" if kind in NODE_LOCAL_FS else "warn")
    one_host = plan.launch.master_addr in ("127.0.0.1", "localhost", "::1", socket.gethostname())
    if one_host:  # every "node" runs on this host (tests, one big machine): any folder is shared
        shared, kind = "ok", f"{kind or 'a local'} (every node on this host)"
    env = sorted(environment.configured(plan.curriculum))
    how = (
        "written to each stage's .deepspeed_env, which the DeepSpeed launcher exports on every host"
        if plan.launch.launcher == "deepspeed"
        else "set by spinegpt on every node it runs on"
    )
    return [
        Check(
            "shared output",
            shared,
            f"{plan.output_dir} is on {kind or 'an unknown'} filesystem",
            "put --output-dir on storage every node mounts (NFS, Lustre, GPFS, ...)",
        ),
        Check("env on every node", "ok", f"{', '.join(env)}: {how}"),
    ]


def run(plan: Plan, nodes: int | None = None) -> list[Check]:
    nodes = nodes or plan.launch.nnodes
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_cuda(plan),
        lambda: check_gpus(plan),
        lambda: check_memory(plan, nodes),
        lambda: check_attention(plan),
        lambda: check_parallelism(plan),
        lambda: check_liger(plan),
        lambda: check_cpu_adam(plan),
        lambda: check_model(plan),
        lambda: check_data(plan),
        lambda: check_disk(plan),
        lambda: check_host_ram(plan, nodes),
        lambda: check_nodes(plan, nodes),
    ]
    checks: list[Check] = []
    for step in steps:
        result = step()
        checks += result if isinstance(result, list) else [result]
    return checks


def render(checks: list[Check]) -> str:
    failed = [c for c in checks if not c.ok]
    verdict = f"{len(failed)} check(s) FAILED" if failed else "ready"
    return "preflight:\n" + "\n".join(c.line() for c in checks) + f"\n{verdict}"
