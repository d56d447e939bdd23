"""SLURP as the recipes expect it: the published text and audio downloaded (resumable, checksummed), extracted, and
validated.

    scripts/prepare_data.py slurp [--output_dir data/slurp] [--download_dir data/slurp_downloads] [--real_only] \\
        [--skip_download] [--validate_only] [--overwrite] [--retries 3] [--workers 8] \\
        [--audio_url https://zenodo.org/record/4274930/files] [--text_url https://raw.githubusercontent.com/...]

Downloads, into --download_dir, SLURP's annotations (train, train_synthetic, devel, test .jsonl; pswietojanski/slurp at
a fixed commit) and its audio archives (slurp_real.tar.gz, slurp_synth.tar.gz, 6.3 GB; Zenodo record 4274930, as the
repository's scripts/download_audio.sh fetches them). A download continues where an interrupted one stopped (HTTP
range requests; --retries within one run) and is checked against the published checksum before it is used: MD5 for the
archives (Zenodo's), git's blob id for the annotations (the repository's). --real_only leaves out the synthetic
speech (slurp_synth.tar.gz, train_synthetic.jsonl). A mirror (an HTTP server or a local folder holding the same files)
can stand in for either source.

Writes --output_dir: train.jsonl, devel.jsonl, test.jsonl (and train_synthetic.jsonl), and audio/ holding every
recording of both archives in one folder (the recipes' audio_dir), built beside it and put in place when complete; a
folder the builder did not make is never written. Then validates it: every recording the annotations name exists and
decodes. Prints the counts per split as one JSON object (last line; also in OUTPUT/validation.json) and stops with
an error listing the recordings that do not. --validate_only validates an existing folder and writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from audio_recipes.errors import DataError, InputError
from audio_recipes.io import (
    build_folder_atomically,
    holds_build,
    read_jsonl_lines,
    write_json_atomic,
)
from audio_recipes.tasks.slurp import validate_row

AUDIO_URL = "https://zenodo.org/record/4274930/files"
SLURP_COMMIT = "8eb16545762be97ace75334109d73824217311f1"  # pswietojanski/slurp, 2020-11 (the EMNLP 2020 release)
TEXT_URL = f"https://raw.githubusercontent.com/pswietojanski/slurp/{SLURP_COMMIT}/dataset/slurp"
DOWNLOADS_MARKER = ".audio-recipes-slurp-downloads"
AUDIO_SUFFIXES = (".flac", ".wav")
MAX_LISTED = 10
CHUNK = 1 << 20


@dataclass(frozen=True)
class Published:
    """A file as SLURP publishes it: its name, its checksum (`md5:HEX` or `git-sha1:HEX`, git's blob id; a hex
    shorter than the digest is a prefix of it) and, where known, its size in bytes."""

    name: str
    checksum: str
    size: int | None = None
    synthetic: bool = False

    @property
    def is_archive(self) -> bool:
        return self.name.endswith(".tar.gz")

    @property
    def split(self) -> str | None:
        return self.name.removesuffix(".jsonl") if self.name.endswith(".jsonl") else None


# Zenodo record 4274930 lists the archives' MD5s; the annotations' blob ids are in the repository's tree at
# SLURP_COMMIT (devel and test match ../shared/data: tests/test_prepare_slurp.py). Only the first 12 hex digits of
# slurp_synth.tar.gz's MD5 could be found offline: a 48-bit prefix, still a check that no corruption passes.
PUBLISHED: tuple[Published, ...] = (
    Published("slurp_real.tar.gz", "md5:9efc0f058ced47bf5131c7cb2cade513", 3_918_185_662),
    Published("slurp_synth.tar.gz", "md5:6186b4d2475a", synthetic=True),
    Published("train.jsonl", "git-sha1:c7568b5661ea802c9e41204af3d30ef892dcd5c9"),
    Published("train_synthetic.jsonl", "git-sha1:42a7c199979dcbceb3a83603dff1d3aaa14c70a4", synthetic=True),
    Published("devel.jsonl", "git-sha1:de034fadea8caa5a3c08c387b2a750f37737729d", 2_221_203),
    Published("test.jsonl", "git-sha1:d98a6962767dd6a03cae20c31d03c7bf7e4c36af", 3_267_569),
)


class DownloadError(InputError, RuntimeError):
    """A download that did not complete, or completed with the wrong checksum; the message says what to do."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- checksums


def file_checksum(path: Path, algorithm: str) -> str:
    """`md5` of the bytes, or `git-sha1`: git's blob id (SHA-1 of `blob SIZE\\0` and the bytes)."""
    if algorithm == "md5":
        digest = hashlib.md5(usedforsecurity=False)
    elif algorithm == "git-sha1":
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {path.stat().st_size}\0".encode())
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_problem(path: Path, published: Published) -> str | None:
    algorithm, _, expected = published.checksum.partition(":")
    actual = file_checksum(path, algorithm)
    return None if actual.startswith(expected.lower()) else f"{algorithm} {actual}, published {expected}"


# ---------------------------------------------------------------- downloads


def local_source(url: str) -> Path | None:
    """The folder of a mirror given as a path or file:// URL; None for HTTP(S)."""
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(url[len("file://"):]))
    return None if "://" in url else Path(url)


def fetch(url: str, part: Path) -> None:
    """Append to `part` what it lacks of `url`: a range request from its size (a server that ignores ranges sends
    everything, and `part` starts over); a local mirror's file is copied from that offset."""
    offset = part.stat().st_size if part.exists() else 0
    source = local_source(url)
    if source is not None:
        if not source.is_file():
            raise DownloadError(f"{source}: not found in the mirror")
        with source.open("rb") as reader, part.open("ab") as writer:
            reader.seek(offset)
            shutil.copyfileobj(reader, writer, CHUNK)
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after the offset: the file is whole
            return
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    with response:
        if offset and response.status != 206:
            log(f"{url}: the server ignores range requests; downloading it from the start")
            offset = 0
        total = response.headers.get("Content-Length")
        total = offset + int(total) if total is not None else None
        with part.open("ab" if offset else "wb") as writer:
            received, reported = offset, time.monotonic()
            while chunk := response.read(CHUNK):
                writer.write(chunk)
                received += len(chunk)
                if time.monotonic() - reported > 10:
                    reported = time.monotonic()
                    log(f"{part.name[:-len('.part')]}: {received / 1e6:,.0f} / "
                        f"{total / 1e6 if total else float('nan'):,.0f} MB")
        if total is not None and received < total:
            raise DownloadError(f"{url}: the connection closed after {received} of {total} bytes")


def check_writable_downloads(folder: Path) -> None:
    """Downloads go only into a folder this builder made (its marker), or a new or empty one."""
    if folder.exists() and not (folder / DOWNLOADS_MARKER).is_file() and any(folder.iterdir()):
        raise DownloadError(f"{folder} exists and was not made by `prepare_data.py slurp` (no {DOWNLOADS_MARKER}): "
                            "nothing was written there; name another --download_dir, or put the published files "
                            "there yourself and pass --skip_download")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DOWNLOADS_MARKER).touch()


def download(published: Published, base_url: str, folder: Path, retries: int) -> Path:
    """`folder/NAME`, downloaded into NAME.part (resumed where an earlier run stopped), retried `retries` times after
    an interruption, and renamed into place once its checksum is the published one."""
    destination = folder / published.name
    part = folder / f"{published.name}.part"
    url = f"{base_url.rstrip('/')}/{published.name}"
    check_writable_downloads(folder)
    for attempt in range(retries + 1):
        try:
            log(f"downloading {url}" + (f" from byte {part.stat().st_size:,}" if part.exists() else ""))
            fetch(url, part)
            break
        # URLError, a reset connection and a timeout are OSErrors; a body cut short is an IncompleteRead
        except (OSError, http.client.HTTPException, DownloadError) as error:
            kept = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DownloadError(f"{url}: the download was interrupted ({error}); {kept:,} bytes are kept in "
                                    f"{part}: run again to continue from there") from error
            log(f"{url}: interrupted ({error}); {kept:,} bytes kept, continuing (retry {attempt + 1} of {retries})")
            time.sleep(min(2 ** attempt, 30))
    if published.size is not None and part.stat().st_size != published.size:
        size = part.stat().st_size
        if size > published.size:
            part.unlink()
        raise DownloadError(f"{url}: {size:,} bytes, published {published.size:,}"
                            + (" (removed: run again to download it anew)" if size > published.size else
                               f" (kept in {part}: run again to continue)"))
    problem = checksum_problem(part, published)
    if problem:
        part.unlink()
        raise DownloadError(f"{url}: checksum mismatch ({problem}); the download was removed: run again to download "
                            "it anew, or check the mirror")
    os.replace(part, destination)
    return destination


def ensure_downloads(files: Iterable[Published], folder: Path, audio_url: str, text_url: str, retries: int,
                     skip_download: bool) -> None:
    """Every published file in `folder` with its published checksum: downloaded where absent (or partial)."""
    missing = []
    for published in files:
        path = folder / published.name
        if path.is_file():
            log(f"checking {path}")
            problem = checksum_problem(path, published)
            if problem is None:
                continue
            raise DownloadError(f"{path}: checksum mismatch ({problem}): remove it and run again to download it "
                                "anew")
        if skip_download:
            missing.append(published.name)
            continue
        download(published, audio_url if published.is_archive else text_url, folder, retries)
    if missing:
        raise DownloadError(f"--skip_download, but {folder} lacks {', '.join(missing)}: run without --skip_download, "
                            "or put the published files there")


# ---------------------------------------------------------------- extraction


def extract_audio(archive: Path, audio_dir: Path, seen: dict[str, str]) -> int:
    """The audio files of a SLURP archive (`slurp_real/NAME.flac`, ...) into audio_dir, by name alone; a name in two
    archives, or a member leaving the archive's folder, is an error. Returns the files written."""
    written = 0
    with tarfile.open(archive, mode="r|gz") as members:
        for member in members:
            path = PurePosixPath(member.name)
            if not member.isfile() or path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            if path.is_absolute() or ".." in path.parts:
                raise DataError(f"{archive}: member {member.name!r} leaves the archive's folder")
            if path.name in seen:
                raise DataError(f"{archive}: {path.name} is also in {seen[path.name]}; SLURP's recordings are named "
                                "uniquely, so one of the archives is not the published one")
            seen[path.name] = archive.name
            with members.extractfile(member) as reader, (audio_dir / path.name).open("wb") as writer:
                shutil.copyfileobj(reader, writer, CHUNK)
            written += 1
    return written


def extract(files: list[Published], downloads: Path, staging: Path) -> None:
    (staging / "audio").mkdir()
    seen: dict[str, str] = {}
    for published in files:
        if published.is_archive:
            log(f"extracting {published.name}")
            count = extract_audio(downloads / published.name, staging / "audio", seen)
            log(f"{published.name}: {count:,} recordings")
        else:
            shutil.copyfile(downloads / published.name, staging / published.name)


# ---------------------------------------------------------------- validation


def recording_problem(path: Path) -> str | None:
    """Why a recording cannot be used (absent, or not decodable to the end), or None."""
    import soundfile

    if not path.is_file():
        return "missing"
    try:
        audio, _ = soundfile.read(str(path), dtype="float32")
    except Exception as error:  # soundfile raises several kinds for undecodable files
        return f"does not decode ({type(error).__name__}: {str(error).splitlines()[0][:100]})"
    return "no samples" if audio.size == 0 else None


def validate_layout(output_dir: Path, splits: list[str], workers: int) -> dict[str, Any]:
    """Counts per split (sentences, recordings, missing, undecodable) and the problems found, first ones listed."""
    audio_dir = output_dir / "audio"
    report: dict[str, Any] = {"output_dir": str(output_dir), "splits": {}}
    problems: list[str] = []
    referenced: set[str] = set()
    for split in splits:
        path = output_dir / f"{split}.jsonl"
        lines = read_jsonl_lines(path)
        for line_number, row in lines:
            validate_row(row, f"{path}, line {line_number} (slurp_id {row.get('slurp_id')})")
        rows = [row for _, row in lines]
        files = [recording["file"] for row in rows for recording in row["recordings"]]
        referenced.update(files)
        log(f"validating the {len(files):,} recordings of {split}")
        with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding (libsndfile) releases the GIL
            found = list(pool.map(recording_problem, (audio_dir / name for name in files)))
        bad = [(name, problem) for name, problem in zip(files, found, strict=True) if problem]
        problems += [f"{split}: {name}: {problem}" for name, problem in bad]
        report["splits"][split] = {"sentences": len(rows), "recordings": len(files),
                                   "missing": sum(problem == "missing" for _, problem in bad),
                                   "undecodable": sum(problem != "missing" for _, problem in bad)}
    on_disk = {path.name for path in audio_dir.iterdir()} if audio_dir.is_dir() else set()
    report["audio_files"] = len(on_disk)
    report["unreferenced_audio_files"] = len(on_disk - referenced)
    report["problems"] = len(problems)
    report["first_problems"] = problems[:MAX_LISTED]
    return report


# ---------------------------------------------------------------- entry


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prepare_data.py slurp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("data/slurp"), help="the layout the recipes read")
    parser.add_argument("--download_dir", type=Path, help="default: OUTPUT_DIR's name + _downloads, beside it")
    parser.add_argument("--real_only", action="store_true", help="leave out the synthetic speech and its rows")
    parser.add_argument("--skip_download", action="store_true", help="use the files already in --download_dir")
    parser.add_argument("--validate_only", action="store_true", help="validate --output_dir; write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier build with other settings")
    parser.add_argument("--retries", type=int, default=3, help="continue an interrupted download this many times")
    parser.add_argument("--workers", type=int, default=8, help="threads decoding recordings in the validation")
    parser.add_argument("--audio_url", default=AUDIO_URL, help="where the archives are (an HTTP(S) URL or a folder)")
    parser.add_argument("--text_url", default=TEXT_URL, help="where the annotations are (an HTTP(S) URL or a folder)")
    args = parser.parse_args(argv)
    args.download_dir = args.download_dir or args.output_dir.with_name(args.output_dir.name + "_downloads")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    files = [published for published in PUBLISHED if not (args.real_only and published.synthetic)]
    splits = [published.split for published in files if published.split]
    built = False
    if not args.validate_only:
        settings = {"real_only": args.real_only, "files": {published.name: published.checksum for published in files}}
        # Asked before gigabytes of downloads: a folder this build may not replace, or one that already holds it
        if not holds_build(args.output_dir, "slurp", settings, args.overwrite):
            ensure_downloads(files, args.download_dir, args.audio_url, args.text_url, args.retries,
                             args.skip_download)
        built = build_folder_atomically(args.output_dir, "slurp", settings, args.overwrite,
                                        lambda staging: extract(files, args.download_dir, staging))
        log(f"{'built' if built else 'already built:'} {args.output_dir}")
    elif not args.output_dir.is_dir():
        raise DataError(f"--validate_only: {args.output_dir} is not a folder (build it with prepare_data.py slurp)")
    if args.validate_only:
        splits = [split for split in splits if (args.output_dir / f"{split}.jsonl").is_file()]
        if not splits:
            raise DataError(f"--validate_only: {args.output_dir} holds none of {', '.join(p.name for p in files)}")
    report = {**validate_layout(args.output_dir, splits, args.workers), "built": built}
    if not args.validate_only:
        write_json_atomic(args.output_dir / "validation.json", report)
    print(json.dumps(report))
    if report["problems"]:
        raise DataError(f"{args.output_dir}: {report['problems']} recordings the annotations name cannot be used "
                        f"({'; '.join(report['first_problems'])}"
                        f"{', first ' + str(MAX_LISTED) + ' shown' if report['problems'] > MAX_LISTED else ''})")
