"""The one module that knows ms-swift: a stage in, the exact ``swift sft`` command out; and back, reading what the
engine prints and leaves in its output folder (per-step log records, checkpoints, ``logging.jsonl``); its LoRA merge
and its inference engines.

Everything here is a pure function of its inputs, so ``spinegpt plan`` prints exactly the command
``spinegpt run`` executes. The engine is started as ``python -m swift.cli.sft`` (what the ``swift sft`` console
script runs per process) under ``torch.distributed.run`` -- one process included -- instead of via ``swift sft``'s
own NPROC_PER_NODE re-launch: one fewer process layer, and the launcher flags are ours to print.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinegpt.eval_hooks.protocol import GenerationSpec
from spinegpt.files import write_json_atomic
from spinegpt.paths import cache_root
from spinegpt.train import weights
from spinegpt.train.topology import Launch

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from spinegpt.train.curriculum import Curriculum, Stage

ENGINE_MODULE = "swift.cli.sft"
EXPORT_MODULE = "swift.cli.export"
MERGED_SUFFIX = "-merged"
MAX_LOADER_WORKERS = 8
"""More dataloader workers than this per rank only add memory: each holds the processor and its prefetched rows."""
LOG_FILE = "logging.jsonl"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_CONSOLE_RECORD = re.compile(r"\{'loss': .*\}")

MANAGED_ARGS = frozenset(
    {
        "model",
        "model_type",
        "template",
        "dataset",
        "output_dir",
        "add_version",
        "resume_from_checkpoint",
        "resume_only_model",
        "seed",
        "data_seed",
        "deepspeed",
        "check_model",
        "torch_dtype",
        "attn_impl",
        "report_to",
        "run_name",
        "truncation_strategy",
    }
)
"""Engine arguments spinegpt sets itself from the curriculum; a stage may not pass them through, because a second
value would silently fight the first (two outputs, two models, two datasets, a seed the manifest does not show)."""
STAGE_ARGS = frozenset(
    {
        "tuner_type", "bf16", "fp16", "learning_rate", "max_length", "num_train_epochs", "max_steps",
        "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_ratio", "lr_scheduler_type",
        "weight_decay", "gradient_checkpointing", "freeze_vit", "freeze_aligner", "freeze_llm", "save_strategy",
        "save_steps", "save_total_limit", "logging_steps", "dataloader_num_workers", "dataset_num_proc",
        "use_liger_kernel", "padding_free", "packing", "sequence_parallel_size", "lora_rank", "lora_alpha",
    }
)  # fmt: skip
"""The other engine arguments :func:`sft_arguments` writes from a stage (the test suite holds the two lists to what
it writes)."""


def argument_name(key: str) -> str:
    """The engine's name for a command-line key: its parser takes ``--max-steps`` and ``--max_steps`` alike."""
    return key.strip().lstrip("-").replace("-", "_")


def engine_argument_names() -> frozenset[str] | None:
    """Every argument ``swift sft`` accepts (its ``SftArguments`` fields), or None where ms-swift is not installed.

    Importing ms-swift takes seconds, so the list is cached per ms-swift version under the spinegpt cache."""
    try:
        version = importlib.metadata.version("ms-swift")
    except importlib.metadata.PackageNotFoundError:
        return None
    cache = cache_root() / f"ms-swift-{version}-sft-arguments.json"
    if cache.is_file():
        try:
            return _argument_names(json.loads(cache.read_text()))
        except (OSError, ValueError) as exc:
            logger.warning(f"ms-swift argument cache {cache}: {exc}; discarded and read from ms-swift again")
    try:
        # ms-swift announces its dataset registry on stdout when imported: keep stdout for commands' output.
        with contextlib.redirect_stdout(sys.stderr):
            from swift.arguments.sft_args import SftArguments
    except ImportError:
        return None
    names = sorted(f.name for f in dataclasses.fields(SftArguments))
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, names)
    return frozenset(names)


def _argument_names(cached: Any) -> frozenset[str]:
    """A cached argument list checked as one read from ms-swift would be: argument names, among them every one
    spinegpt sets itself (a list cut short would make ``validate`` reject the shipped curricula)."""
    if not isinstance(cached, list) or not all(isinstance(n, str) and n.isidentifier() for n in cached):
        raise ValueError("not a list of argument names")
    names = frozenset(cached)
    if missing := sorted((MANAGED_ARGS | STAGE_ARGS) - names):
        raise ValueError(f"lacks arguments ms-swift has ({', '.join(missing[:5])})")
    return names


def check_engine_args(args: Mapping[str, Any], stage_keys: frozenset[str]) -> dict[str, Any]:
    """A stage's ``engine_args`` with each key as the engine reads it (``--max-steps`` and ``--max_steps`` are the
    same argument); raises ValueError naming every key that is spinegpt's own, a stage key, repeated, or not an
    argument of ``swift sft`` (with the closest names)."""
    known = engine_argument_names() if args else None
    problems = []
    normalised: dict[str, Any] = {}
    for key, arg in args.items():
        name = argument_name(str(key))
        if name in MANAGED_ARGS:
            problems.append(f"{key!r} is set by spinegpt from the curriculum")
        elif name in stage_keys:
            problems.append(f"{key!r} is a stage key; set it on the stage, not in engine_args")
        elif known is not None and name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{key!r} is not an argument of the engine (ms-swift sft){hint}")
        elif name in normalised:
            problems.append(f"{key!r} repeats another spelling of {name!r}")
        normalised[name] = arg
    if problems:
        raise ValueError("; ".join(problems))
    return normalised


def _value(value: Any) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True)]
    return [str(value)]


def sft_arguments(
    *,
    stage: Stage,
    curriculum: Curriculum,
    model: str,
    dataset: str,
    output_dir: str,
    deepspeed: str | None,
    cpus_per_process: int = 1,
    resume_from_checkpoint: str | None = None,
) -> list[str]:
    """The ``swift sft`` arguments for one stage; ``resume_from_checkpoint`` continues an interrupted attempt
    (the trainer's state, optimizer and data position come from that checkpoint). ``cpus_per_process``: this node's
    CPUs per engine process, which size the data loading."""
    args: dict[str, Any] = {
        "model": model,
        "model_type": curriculum.model_type,
        "template": curriculum.template,
        # The run is offline-first: a local model needs no hub metadata lookup (seconds of retries otherwise).
        "check_model": False,
        "tuner_type": stage.tuner_type,
        "dataset": dataset,
        "output_dir": output_dir,
        # One folder per stage that resume can find again; ms-swift would otherwise add a timestamped subfolder.
        "add_version": False,
        "seed": curriculum.seed,
        "data_seed": curriculum.seed,
        "torch_dtype": curriculum.torch_dtype,
        "bf16": curriculum.torch_dtype == "bfloat16",
        "fp16": curriculum.torch_dtype == "float16",
        "attn_impl": attention(stage.attn_impl or curriculum.attn_impl)[0],
        "report_to": curriculum.report_to,
        "run_name": f"{curriculum.name}/{stage.name}",
        "learning_rate": stage.learning_rate,
        "max_length": stage.max_length,
        # Over-length records are already dropped (or refused) by spinegpt with exact counts; the engine's own
        # check is the backstop for a token or two of template difference, and never truncates unless asked.
        "truncation_strategy": "right" if stage.over_length == "truncate" else "delete",
        "num_train_epochs": stage.num_train_epochs,
        "per_device_train_batch_size": stage.per_device_train_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "warmup_ratio": stage.warmup_ratio,
        "lr_scheduler_type": stage.lr_scheduler_type,
        "weight_decay": stage.weight_decay,
        "gradient_checkpointing": stage.gradient_checkpointing,
        "freeze_vit": stage.freeze_vit,
        "freeze_aligner": stage.freeze_aligner,
        "freeze_llm": stage.freeze_llm,
        "save_strategy": "steps",
        "save_steps": stage.save_steps,
        "logging_steps": stage.logging_steps,
    }
    # Data loading sized from the node's CPUs per process (ms-swift's defaults, 1 and 1, starve 8 GPUs of ~690k
    # multimodal rows): multimodal rows are decoded lazily in the dataloader's workers (one CPU left to the rank
    # itself); packing tokenizes every row up front in dataset_num_proc processes on every rank.
    args["dataloader_num_workers"] = max(1, min(MAX_LOADER_WORKERS, cpus_per_process - 1))
    args["dataset_num_proc"] = max(1, cpus_per_process)
    # Long-context switches: passed only when on, so a plain stage's command stays short and readable.
    for key in ("use_liger_kernel", "padding_free", "packing"):
        if getattr(stage, key):
            args[key] = True
    if stage.sequence_parallel_size > 1:
        args["sequence_parallel_size"] = stage.sequence_parallel_size
    if stage.max_steps is not None:
        args["max_steps"] = stage.max_steps
    if stage.save_total_limit is not None:
        args["save_total_limit"] = stage.save_total_limit
    if stage.tuner_type == "lora":
        args["lora_rank"] = stage.lora_rank
        args["lora_alpha"] = stage.lora_alpha
    if deepspeed is not None:
        args["deepspeed"] = deepspeed
    if resume_from_checkpoint is not None:
        args["resume_from_checkpoint"] = resume_from_checkpoint
    args.update(stage.engine_args)
    argv: list[str] = []
    for key, value in args.items():
        argv += [f"--{key}", *_value(value)]
    return argv


@functools.cache
def flash_attention() -> tuple[bool, str]:
    """Whether flash-attn can serve the engine in this environment, and why. Finding the package is not enough (it
    is all transformers checks): a build against another torch or CUDA is found and fails with an undefined symbol
    at the first attention call, hours into a job; importing its compiled extension is what tells."""
    if importlib.util.find_spec("flash_attn") is None:
        return False, "flash-attn is not installed (README: the GPU install)"
    try:
        import torch  # noqa: F401  (the extension links against torch's libraries)

        importlib.import_module("flash_attn_2_cuda")
    except Exception as exc:  # ImportError or OSError ("undefined symbol"): built for another torch or CUDA
        return False, f"flash-attn is installed but its compiled extension does not load ({type(exc).__name__}: {exc})"
    return True, "flash-attn's compiled extension loads"


def data_workers(engine_args: Sequence[str]) -> str:
    """How the engine loads the data, as its arguments say (``spinegpt plan`` shows it)."""

    def value(key: str) -> str:
        flag = f"--{key}"
        return engine_args[engine_args.index(flag) + 1] if flag in engine_args else "?"

    return (
        f"{value('dataloader_num_workers')} dataloader worker(s) per process, "
        f"{value('dataset_num_proc')} preprocessing process(es) per process (packing tokenizes up front)"
    )


def attention(requested: str) -> tuple[str, str]:
    """The attention implementation the engine gets, and why: ``auto`` is flash-attn where it can serve, else sdpa
    (never silently: the reason is shown by ``plan`` and kept in the manifest's engine arguments)."""
    if requested != "auto":
        return requested, "as configured"
    usable, why = flash_attention()
    return ("flash_attn", f"auto: {why}") if usable else ("sdpa", f"auto: {why}; using PyTorch's sdpa")


def engine_environment(curriculum: Curriculum) -> dict[str, str]:
    """What the engine's processes need in their environment besides the curriculum's own ``env``."""
    return {
        # ms-swift downloads hub ids from ModelScope unless told otherwise; everything else here reads the HF hub.
        "USE_HF": "1" if curriculum.hub == "huggingface" else "0",
        # Long rows of varying length fragment the caching allocator; expandable segments give the memory back.
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        # One process, one GPU: with more GPUs visible than processes per node, ms-swift would spread each process's
        # model over several devices (its device_map mode), which DeepSpeed refuses, or assert that the count of
        # GPUs divides by the processes (swift.utils.env.is_mp). spinegpt's parallelism is DeepSpeed's only.
        "SWIFT_SINGLE_DEVICE_MODE": "1",
    }


def command(engine_args: Sequence[str], launch: Launch, python: str | None = None) -> list[str]:
    """The full process command of one node: the engine alone for one process, else under its launcher."""
    python = python or sys.executable
    engine = ["-m", ENGINE_MODULE, *engine_args]
    if launch.launcher == "deepspeed":
        if not launch.hostfile:
            raise ValueError("the deepspeed launcher needs a hostfile")
        binding = ["--bind_cores_to_rank"] if launch.bind_cores else []
        return [
            python,
            "-m",
            "deepspeed.launcher.runner",
            f"--hostfile={launch.hostfile}",
            f"--master_addr={launch.master_addr}",
            f"--master_port={launch.master_port}",
            *binding,
            "--module",
            ENGINE_MODULE,
            *engine_args,
        ]
    if launch.nnodes == 1:
        # --standalone: torchrun picks a free rendezvous port itself, so concurrent runs on one machine never
        # collide on a fixed MASTER_PORT. One process goes through it too: without RANK, WORLD_SIZE, MASTER_ADDR,
        # MASTER_PORT and LOCAL_RANK, DeepSpeed's init_distributed falls back to MPI discovery (mpi4py, and port
        # 29500 for every run of the machine) -- it cannot start a single-GPU run without them.
        rendezvous = ["--standalone"]
    else:
        rendezvous = [
            f"--nnodes={launch.nnodes}",
            f"--node_rank={launch.node_rank}",
            f"--master_addr={launch.master_addr}",
            f"--master_port={launch.master_port}",
        ]
    return [python, "-m", "torch.distributed.run", *rendezvous, f"--nproc_per_node={launch.nproc_per_node}", *engine]


def merge_lora_command(
    *, curriculum: Curriculum, model: str, adapter_checkpoint: Path, python: str | None = None
) -> tuple[list[str], Path]:
    """The engine command folding a LoRA checkpoint into its base model, and the folder it writes.

    A LoRA stage's checkpoint holds adapters only; the next stage (and export) need full weights.
    """
    merged = adapter_checkpoint.with_name(adapter_checkpoint.name + MERGED_SUFFIX)
    args = {
        "model": model,
        "model_type": curriculum.model_type,
        "template": curriculum.template,
        "adapters": str(adapter_checkpoint),
        "merge_lora": True,
        "torch_dtype": curriculum.torch_dtype,
        "output_dir": str(merged),
        "exist_ok": True,
    }
    argv = [python or sys.executable, "-m", EXPORT_MODULE]
    for key, value in args.items():
        argv += [f"--{key}", *_value(value)]
    return argv, merged


def checkpoints(output_dir: Path) -> list[Path]:
    """The engine's checkpoints in a stage folder, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be trained on from, or None when it is complete. A kill or a full disk mid-save
    leaves a trainer state that is empty or cut off, weights shorter than their header says, or DeepSpeed states
    without their ``latest`` tag; the trainer writes its state last, but a full disk can cut any file short."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"trainer_state.json unreadable ({type(exc).__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json holds no global_step"
    if not list(checkpoint.glob("*.safetensors")):
        return "no weights (*.safetensors)"
    if problems := weights.shard_problems(checkpoint, adapters=True):
        return problems[0]
    states = [p for p in checkpoint.glob("global_step*") if p.is_dir()]
    if states:
        latest = checkpoint / "latest"
        tag = latest.read_text().strip() if latest.is_file() else ""
        if not tag or not (checkpoint / tag).is_dir():
            return "its DeepSpeed states have no valid 'latest' tag (a save cut off)"
        empty = [f.name for f in (checkpoint / tag).iterdir() if f.is_file() and f.stat().st_size == 0]
        if empty:
            return f"empty DeepSpeed state file(s) {empty[:3]}"
    return None


def resumable_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint; newer ones a kill or a full disk left incomplete are skipped, saying why."""
    for checkpoint in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        logger.warning(f"skipping {checkpoint.name}: {problem}; an older checkpoint is taken if there is one")
    return None


def remove_incomplete(output_dir: Path, since: float) -> list[str]:
    """Remove the checkpoints newer than the newest complete one that were written since ``since`` (this attempt's
    engine): what a full disk cut off mid-save. They can never be resumed from (see :func:`resumable_checkpoint`)
    and hold the space the run needs to record its failure; returns ``name: why`` for each one removed."""
    removed = []
    for checkpoint in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            break
        if checkpoint.stat().st_mtime < since:
            continue
        shutil.rmtree(checkpoint, ignore_errors=True)
        removed.append(f"{checkpoint.name}: {problem}")
    return removed


def is_last_step(checkpoint: Path) -> bool:
    """Whether the checkpoint was written at the trainer's last step (the stage's training is complete)."""
    state = trainer_state(checkpoint)
    return bool(state.get("max_steps")) and state.get("global_step") == state.get("max_steps")


def trainer_state(checkpoint: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((checkpoint / "trainer_state.json").read_text())
    return data


@dataclass(frozen=True)
class StepRecord:
    """One logged training step of the engine (its ``{'loss': ..., 'global_step/max_steps': '3/10', ...}``)."""

    step: int
    max_steps: int | None
    loss: float
    learning_rate: float | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    elapsed: str | None = None
    """As the engine printed it (``1m 2s``)."""
    remaining: str | None = None

    @classmethod
    def parse(cls, record: Mapping[str, Any]) -> StepRecord | None:
        """A training-step record, or None for any other record (evaluation, the end-of-training summary)."""
        if "loss" not in record or "global_step/max_steps" not in record:
            return None
        step, _, total = str(record["global_step/max_steps"]).partition("/")
        if not step.isdigit():
            return None
        lr = record.get("learning_rate")
        return cls(
            step=int(step),
            max_steps=int(total) if total.isdigit() else None,
            loss=float(record["loss"]),
            learning_rate=float(lr) if isinstance(lr, int | float) else None,
            elapsed_s=_seconds(record.get("elapsed_time")),
            remaining_s=_seconds(record.get("remaining_time")),
            elapsed=record.get("elapsed_time"),
            remaining=record.get("remaining_time"),
        )

    def summary(self, label: str) -> str:
        """A one-line console summary."""
        parts = [
            f"{label} step {self.step}/{self.max_steps if self.max_steps is not None else '?'}",
            f"loss {self.loss}",
        ]
        if self.learning_rate is not None:
            parts.append(f"lr {self.learning_rate}")
        if self.elapsed is not None:
            parts.append(f"elapsed {self.elapsed}, left {self.remaining or '?'}")
        return "  ".join(parts)


def _seconds(text: Any) -> float | None:
    """The engine's '1h 2m 3s' / '45s' durations in seconds."""
    if not isinstance(text, str):
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text)
    if not parts:
        return None
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(float(n) * scale[u] for n, u in parts)


def console_step(line: str) -> StepRecord | None:
    """The training step the engine printed on this console line (a Python dict literal), if any."""
    match = _CONSOLE_RECORD.search(line)
    if not match:
        return None
    try:
        record = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return None
    return StepRecord.parse(record) if isinstance(record, dict) else None


def read_log(output_dir: Path) -> list[dict[str, Any]]:
    """The engine's log records (``logging.jsonl``); a torn last line from a killed run is skipped."""
    path = output_dir / LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_steps(output_dir: Path) -> list[StepRecord]:
    """The engine's training steps, one per step in step order. A resumed stage logs the steps after its checkpoint
    twice (once per attempt); the last attempt's record wins."""
    by_step: dict[int, StepRecord] = {}
    for record in read_log(output_dir):
        step = StepRecord.parse(record)
        if step is not None:
            by_step[step.step] = step
    return [by_step[step] for step in sorted(by_step)]


def losses(steps: Sequence[StepRecord]) -> list[tuple[int, float]]:
    """(step, loss) pairs, one per step."""
    return [(s.step, s.loss) for s in steps]


def inference_backend(backend: str) -> str:
    """``auto`` resolved: vLLM where it is installed and a GPU is there, else transformers."""
    if backend != "auto":
        return backend
    import importlib.util

    import torch

    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "transformers"


class Generator:
    """Greedy completions through the engine's inference API, the model loaded once on first use: its vLLM engine
    when asked for (or, with ``auto``, when vLLM and a GPU are there), else its transformers engine.

    Called with (user prompt with <image> tags, image paths) pairs and a token budget; returns the texts in order.
    """

    SEED = 0
    """Passed with every request; greedy decoding does not draw, but a sampling engine would draw the same."""

    def __init__(
        self,
        model: str,
        *,
        model_type: str,
        template: str,
        torch_dtype: str,
        attn_impl: str,
        batch_size: int,
        backend: str = "auto",
    ) -> None:
        self.model = model
        self.options = {"model_type": model_type, "template_type": template}
        self.torch_dtype, self.attn_impl, self.batch_size, self.backend = torch_dtype, attn_impl, batch_size, backend
        self._engine: Any = None

    def settings(self, env: Mapping[str, str] | None = None) -> GenerationSpec:
        """What this generator decides about the outputs, for the evaluation protocol; the pixel limits are the ones
        the engine reads from the environment (``env``, default this process's)."""
        env = os.environ if env is None else env
        return GenerationSpec(
            engine="ms-swift",
            backend=inference_backend(self.backend),
            model_type=self.options["model_type"],
            template=self.options["template_type"],
            torch_dtype=self.torch_dtype,
            attn_impl=self.attn_impl,
            decoding="greedy",
            temperature=0.0,
            seed=self.SEED,
            max_pixels=env.get("MAX_PIXELS"),
            min_pixels=env.get("MIN_PIXELS"),
            batch_size=self.batch_size,
        )

    def _load(self) -> Any:
        import torch

        dtype = getattr(torch, self.torch_dtype)
        if inference_backend(self.backend) == "vllm":
            from swift.infer_engine import VllmEngine

            return VllmEngine(self.model, torch_dtype=dtype, **self.options)
        from swift.infer_engine import TransformersEngine

        return TransformersEngine(
            self.model, torch_dtype=dtype, attn_impl=self.attn_impl, max_batch_size=self.batch_size, **self.options
        )

    def __call__(self, requests: Sequence[tuple[str, Sequence[str]]], max_new_tokens: int) -> list[str]:
        from swift.infer_engine import InferRequest, RequestConfig

        if self._engine is None:
            self._engine = self._load()
        batch = [InferRequest(messages=[{"role": "user", "content": p}], images=list(i)) for p, i in requests]
        config = RequestConfig(max_tokens=max_new_tokens, temperature=0.0, seed=self.SEED)
        responses = self._engine.infer(batch, config)
        texts = []
        for response in responses:
            if isinstance(response, BaseException):
                raise RuntimeError(f"generation failed: {response}") from response
            texts.append(str(response.choices[0].message.content or ""))
        return texts
