#!/usr/bin/env python3
"""`make gpu-wheels`: on a machine with network, download the wheels `make gpu-check` installs offline on a GPU node
on top of its own PyTorch (requirements-gpu-check.txt, no dependency resolution: torch is never fetched).

    python scripts/gpu_wheels.py --dest gpu-wheels --python-version 3.12 [--with-bitsandbytes]
        [--flash-attn-wheel PATH] [--dry-run]

Pure-Python wheels where they exist, manylinux x86_64 otherwise; at most --max-mb (60) without the optional
bitsandbytes and flash-attn. flash-attn has no wheels on PyPI: give one built for the node's torch, CUDA and Python
(its GitHub releases publish such builds) with --flash-attn-wheel; without it the check skips flash attention.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements-gpu-check.txt"
# pip matches a manylinux tag exactly: each tag a pinned wheel is published under (bitsandbytes: 2_24) must be named
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
BITSANDBYTES = "bitsandbytes==0.50.2"  # requirements.txt's, tested here (QLoRA on CPU)
OPTIONAL = ("bitsandbytes", "flash_attn")


def pinned_requirements(python_version: str, path: Path = REQUIREMENTS) -> list[str]:
    """The `name==version` lines that apply to the target Python (markers evaluated for it, not for this one)."""
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0",
                   "implementation_name": "cpython", "platform_machine": "x86_64", "sys_platform": "linux",
                   "platform_system": "Linux"}
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not Marker(str(requirement.marker)).evaluate(environment):
            continue
        if len(requirement.specifier) != 1 or next(iter(requirement.specifier)).operator != "==":
            raise SystemExit(f"{path.name}: {line!r} is not pinned to one version (name==version)")
        pins.append(f"{requirement.name}{requirement.specifier}")
    return pins


def download_command(dest: Path, python_version: str, pins: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python_version, "--dest", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return command + pins


def wheel_names(dest: Path) -> dict[str, list[Path]]:
    names: dict[str, list[Path]] = {}
    for wheel in dest.glob("*.whl"):
        names.setdefault(re.sub(r"[-_.]+", "_", wheel.name.split("-")[0]).lower(), []).append(wheel)
    return names


def check_folder(dest: Path, max_mb: float) -> float:
    """One version of each package, and the required wheels within max_mb; their size in MB."""
    names = wheel_names(dest)
    doubles = {name: [w.name for w in wheels] for name, wheels in names.items() if len(wheels) > 1}
    if doubles:
        raise SystemExit(f"{dest}: several versions of {doubles}: keep one of each (the install would stop)")
    size = sum(w.stat().st_size for name, wheels in names.items() if name not in OPTIONAL for w in wheels) / 1e6
    if size > max_mb:
        raise SystemExit(f"{dest}: the required wheels take {size:.1f} MB, over {max_mb:.0f} MB")
    return size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=ROOT / "gpu-wheels")
    parser.add_argument("--python-version", default="3.12", help="The GPU node's Python, e.g. 3.12.")
    parser.add_argument("--with-bitsandbytes", action="store_true", help="Add bitsandbytes (QLoRA runs).")
    parser.add_argument("--flash-attn-wheel", type=Path, default=None, help="A flash-attn wheel for the node.")
    parser.add_argument("--max-mb", type=float, default=60.0)
    parser.add_argument("--dry-run", action="store_true", help="Print the download command only.")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        raise SystemExit(f"--python-version takes major.minor, e.g. 3.12; got {args.python_version!r}")

    pins = pinned_requirements(args.python_version) + ([BITSANDBYTES] if args.with_bitsandbytes else [])
    command = download_command(args.dest, args.python_version, pins)
    print(" ".join(command))
    if args.dry_run:
        return
    args.dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True)
    if args.flash_attn_wheel is not None:
        shutil.copy2(args.flash_attn_wheel, args.dest / args.flash_attn_wheel.name)
    size = check_folder(args.dest, args.max_mb)
    print(f"{len(list(args.dest.glob('*.whl')))} wheels in {args.dest}, {size:.1f} MB required; copy the folder "
          f"beside the project on the GPU node and run `make gpu-check WHEELS={args.dest}`")


if __name__ == "__main__":
    main()
