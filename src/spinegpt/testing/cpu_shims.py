"""CPU-only import fixes for running the real training stack on a machine without a GPU (CI, laptops).

Two problems stop ms-swift + DeepSpeed on a GPU-less machine; both are environment problems, not project bugs:

1. The registry's torchvision is CUDA-built. On a CPU-only torch its C extension does not load and
   ``import torchvision`` raises ``operator torchvision::nms does not exist`` (torchvision registers Python
   fallbacks that reference those ops). Declaring the two op schemas first lets the import succeed; nothing in
   this project calls them.
2. accelerate picks no distributed backend for a multi-process run when CUDA is absent, so DeepSpeed sees a world
   of one and rejects the batch arithmetic (``train_batch_size ... 2 != 2 * 1 * 2``). We make it choose gloo.

Both fixes are applied lazily, at the moment torchvision or ``accelerate.state`` is first imported, by a
meta-path hook. The hook is installed at interpreter start-up by a ``.pth`` file, which is what makes it reach
the child processes torchrun and the DeepSpeed launcher start. Install it into the current environment with:

    python -m spinegpt.testing.cpu_shims install     # `make setup` does this on machines without CUDA

Where CUDA is available every fix is a no-op, and ``install`` refuses to write the .pth at all.
The start-up cost is one stdlib-only import; torch is imported only when torchvision/accelerate would import it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

PTH_NAME = "spinegpt_cpu_shims.pth"
PTH_LINE = "import spinegpt.testing.cpu_shims as _s; _s.activate()\n"
DISABLE_ENV = "SPINEGPT_NO_CPU_SHIMS"


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def declare_torchvision_ops() -> bool:
    """Declare ``torchvision::nms`` / ``torchvision::qnms`` when torchvision's own extension cannot provide them."""
    if _cuda_available():
        return False
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name in ("nms", "qnms"):
        # RuntimeError: already declared (torchvision's extension did load, or we ran before).
        with contextlib.suppress(RuntimeError):
            lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the fragment alive for the life of the process: dropping it would unregister the schemas.
    globals()["_TORCHVISION_FRAGMENT"] = lib
    return True


def patch_accelerate_backend(state_module: ModuleType) -> bool:
    """Make accelerate fall back to gloo (MULTI_CPU) for a multi-process run without CUDA."""
    if _cuda_available():
        return False
    partial_state = state_module.PartialState
    distributed_type = state_module.DistributedType
    original = partial_state._prepare_backend
    if getattr(original, "_spinegpt_patched", False):
        return True

    def _prepare_backend(self: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        backend, dist_type = original(self, *args, **kwargs)
        if dist_type == distributed_type.NO and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return "gloo", distributed_type.MULTI_CPU
        return backend, dist_type

    _prepare_backend._spinegpt_patched = True  # type: ignore[attr-defined]
    partial_state._prepare_backend = _prepare_backend
    return True


class _AfterExecLoader(importlib.abc.Loader):
    """Wraps a module's real loader and runs a fix right after the module body executes."""

    def __init__(self, inner: importlib.abc.Loader, fix: Any) -> None:
        self._inner = inner
        self._fix = fix

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        self._fix(module)


class _ShimFinder(importlib.abc.MetaPathFinder):
    """Fires each fix once, on the first import of the module it concerns; finds nothing itself."""

    def __init__(self) -> None:
        self._done: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision" and fullname not in self._done:
            self._done.add(fullname)
            declare_torchvision_ops()
            return None
        if fullname == "accelerate.state" and fullname not in self._done:
            self._done.add(fullname)
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _AfterExecLoader(spec.loader, patch_accelerate_backend)
            return spec
        return None


def activate() -> None:
    """Install the lazy hook in this interpreter (idempotent). Called from the .pth file."""
    if os.environ.get(DISABLE_ENV) == "1":
        return
    if any(isinstance(f, _ShimFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _ShimFinder())
    # accelerate may already be imported (activate() called late, not from the .pth): fix it in place.
    state = sys.modules.get("accelerate.state")
    if state is not None:
        patch_accelerate_backend(state)


def pth_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


def install() -> Path | None:
    """Write the .pth into this interpreter's site-packages; None (and nothing written) where CUDA works."""
    if _cuda_available():
        return None
    target = pth_path()
    target.write_text(PTH_LINE)
    return target


def uninstall() -> bool:
    target = pth_path()
    if target.exists():
        target.unlink()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "status"
    if command == "install":
        written = install()
        print(f"cpu shims: installed {written}" if written else "cpu shims: CUDA is available, nothing installed")
    elif command == "uninstall":
        print("cpu shims: removed" if uninstall() else "cpu shims: were not installed")
    elif command == "status":
        print(f"cpu shims: {'installed' if pth_path().exists() else 'not installed'} ({pth_path()})")
    else:
        print(f"usage: python -m spinegpt.testing.cpu_shims [install|uninstall|status], not {command!r}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
