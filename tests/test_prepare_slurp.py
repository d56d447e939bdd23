"""prepare_data.py slurp, offline: a mirror of SLURP's published files in miniature (its annotation files of real
rows, its two archives with their names and tar layout holding a short FLAC per recording), served by a loopback
HTTP server that can cut a download short, or read from a local folder."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_recipes.errors import DataError
from audio_recipes.io import OutputFolderError, read_jsonl, write_jsonl_atomic
from audio_recipes.paths import ASSETS_DIR
from audio_recipes.prepare import run_builder
from audio_recipes.prepare import slurp as builder
from audio_recipes.prepare.slurp import PUBLISHED, DownloadError, Published, file_checksum

ARCHIVE = "slurp_real.tar.gz"


def flac_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * rng.uniform(200, 800) * np.arange(4000) / 16000) + 0.1 * rng.standard_normal(4000)
    buffer = io.BytesIO()
    sf.write(buffer, (0.5 * tone).astype("float32"), 16000, format="FLAC")
    return buffer.getvalue()


def write_archive(path: Path, folder: str, files: list[str]) -> None:
    """A .tar.gz laid out as SLURP's: the folder's entry, then `folder/NAME.flac` for each recording."""
    with tarfile.open(path, "w:gz") as archive:
        entry = tarfile.TarInfo(folder)
        entry.type = tarfile.DIRTYPE
        archive.addfile(entry)
        for number, name in enumerate(files):
            data = flac_bytes(number)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    """mirror/text/*.jsonl (real SLURP rows) and mirror/audio/slurp_{real,synth}.tar.gz."""
    root = tmp_path_factory.mktemp("mirror")
    devel, test = read_jsonl(ASSETS_DIR / "slurp" / "devel.jsonl"), read_jsonl(ASSETS_DIR / "slurp" / "test.jsonl")
    splits = {"train": devel[:3], "train_synthetic": devel[3:5], "devel": devel[5:7], "test": test[:2]}
    (root / "text").mkdir()
    (root / "audio").mkdir()
    for split, rows in splits.items():
        write_jsonl_atomic(root / "text" / f"{split}.jsonl", rows)
    recordings = {split: [r["file"] for row in rows for r in row["recordings"]] for split, rows in splits.items()}
    write_archive(root / "audio" / ARCHIVE, "slurp_real", recordings["train"] + recordings["devel"] + recordings["test"])
    write_archive(root / "audio" / "slurp_synth.tar.gz", "slurp_synth", recordings["train_synthetic"])
    return root, splits


@pytest.fixture
def published(mirror, monkeypatch) -> tuple[Published, ...]:
    """The published files' table, with the mirror's checksums (the names and kinds as SLURP's)."""
    root, _ = mirror
    table = tuple(Published(p.name, f"{'md5' if p.is_archive else 'git-sha1'}:"
                            f"{file_checksum(root / ('audio' if p.is_archive else 'text') / p.name, 'md5' if p.is_archive else 'git-sha1')}",
                            synthetic=p.synthetic) for p in PUBLISHED)
    monkeypatch.setattr(builder, "PUBLISHED", table)
    return table


class MirrorServer(ThreadingHTTPServer):
    def __init__(self, root: Path):
        self.root, self.requests, self.cut_once = root, [], set()
        super().__init__(("127.0.0.1", 0), MirrorHandler)


class MirrorHandler(BaseHTTPRequestHandler):
    """GET with range requests (206 and Content-Range, as Zenodo answers them); a file named in cut_once is sent
    half, once, and the connection closed, as a lost connection ends a download."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.lstrip("/")
        requested = self.headers.get("Range")
        self.server.requests.append((name, requested))
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(requested.split("=")[1].split("-")[0]) if requested else 0
        if start >= len(data):
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if requested else 200)
        self.send_header("Content-Length", str(len(body)))
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if name in self.server.cut_once:
            self.server.cut_once.discard(name)
            body = body[:len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(mirror):
    served = MirrorServer(mirror[0])
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def urls(server: MirrorServer) -> list[str]:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    return ["--audio_url", f"{base}/audio", "--text_url", f"{base}/text"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_an_interrupted_download_continues_where_it_stopped_then_extracts_and_validates(mirror, published, server,
                                                                                          tmp_path, capsys):
    root, splits = mirror
    output = tmp_path / "slurp"
    server.cut_once.add(f"audio/{ARCHIVE}")
    with pytest.raises(DownloadError, match=r"interrupted .* bytes are kept in .*\.part: run again to continue"):
        run_builder("slurp", ["--output_dir", str(output), "--retries", "0", *urls(server)])
    part = tmp_path / "slurp_downloads" / f"{ARCHIVE}.part"
    kept = part.stat().st_size
    assert 0 < kept < (root / "audio" / ARCHIVE).stat().st_size and not output.exists()

    capsys.readouterr()
    run_builder("slurp", ["--output_dir", str(output), "--retries", "0", *urls(server)])
    assert (f"audio/{ARCHIVE}", f"bytes={kept}-") in server.requests  # continued, not started over
    report = last_json(capsys)
    assert report["built"] and report["problems"] == 0
    for split, rows in splits.items():
        recordings = [recording["file"] for row in rows for recording in row["recordings"]]
        assert report["splits"][split] == {"sentences": len(rows), "recordings": len(recordings), "missing": 0,
                                           "undecodable": 0}
        assert read_jsonl(output / f"{split}.jsonl") == rows
        assert all((output / "audio" / name).is_file() for name in recordings)
    assert report["audio_files"] == sum(report["splits"][split]["recordings"] for split in splits)
    assert json.loads((output / "validation.json").read_text()) == report
    assert not part.exists() and (tmp_path / "slurp_downloads" / ARCHIVE).is_file()

    requests = len(server.requests)
    run_builder("slurp", ["--output_dir", str(output), *urls(server)])  # the same build again: nothing to do
    assert len(server.requests) == requests and not last_json(capsys)["built"]


def test_retries_continue_an_interrupted_download_within_one_run(published, server, tmp_path, capsys):
    server.cut_once.add(f"audio/{ARCHIVE}")
    run_builder("slurp", ["--output_dir", str(tmp_path / "slurp"), "--real_only", *urls(server)])
    ranges = [requested for name, requested in server.requests if name == f"audio/{ARCHIVE}"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and len(ranges) == 2
    assert last_json(capsys)["problems"] == 0


def test_a_download_with_the_wrong_checksum_is_removed_and_never_extracted(published, server, tmp_path, monkeypatch):
    table = tuple(Published(p.name, "md5:0123456789abcdef0123456789abcdef") if p.name == ARCHIVE else p
                  for p in published)
    monkeypatch.setattr(builder, "PUBLISHED", table)
    with pytest.raises(DownloadError, match=r"slurp_real\.tar\.gz: checksum mismatch \(md5 [0-9a-f]{32}, published "
                                            r"0123456789abcdef.*removed"):
        run_builder("slurp", ["--output_dir", str(tmp_path / "slurp"), *urls(server)])
    assert not (tmp_path / "slurp").exists()
    assert not any(path.name.startswith(ARCHIVE) for path in (tmp_path / "slurp_downloads").iterdir())


def test_real_only_from_a_local_folder_then_skip_download_and_validate_only(mirror, published, tmp_path, capsys):
    root, splits = mirror
    output = tmp_path / "slurp"
    local = ["--audio_url", str(root / "audio"), "--text_url", f"file://{root / 'text'}"]
    run_builder("slurp", ["--output_dir", str(output), "--real_only", *local])
    report = last_json(capsys)
    assert set(report["splits"]) == {"train", "devel", "test"} and report["problems"] == 0
    assert not (output / "train_synthetic.jsonl").exists()
    assert sorted(path.name for path in (tmp_path / "slurp_downloads").iterdir() if not path.name.startswith(".")) == [
        "devel.jsonl", ARCHIVE, "test.jsonl", "train.jsonl"]

    with pytest.raises(DownloadError, match=r"--skip_download, but .*empty lacks slurp_real\.tar\.gz, train\.jsonl"):
        run_builder("slurp", ["--output_dir", str(tmp_path / "other"), "--real_only", "--skip_download",
                              "--download_dir", str(tmp_path / "empty")])
    run_builder("slurp", ["--output_dir", str(tmp_path / "again"), "--real_only", "--skip_download",
                          "--download_dir", str(tmp_path / "slurp_downloads")])
    assert last_json(capsys)["problems"] == 0

    devel_files = [recording["file"] for row in splits["devel"] for recording in row["recordings"]]
    (output / "audio" / devel_files[0]).unlink()
    (output / "audio" / devel_files[1]).write_bytes(b"fLaC" + bytes(100))
    before = (output / "validation.json").read_text()
    with pytest.raises(DataError, match=rf"2 recordings .*devel: {devel_files[0]}: missing; devel: {devel_files[1]}: "
                                        "does not decode"):
        run_builder("slurp", ["--output_dir", str(output), "--validate_only"])
    report = last_json(capsys)
    assert report["splits"]["devel"] == {"sentences": 2, "recordings": len(devel_files), "missing": 1,
                                         "undecodable": 1}
    assert report["splits"]["train"]["missing"] == 0 and (output / "validation.json").read_text() == before


def test_folders_the_builder_did_not_make_are_never_written(published, server, tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="was not made by `prepare_data.py slurp`"):
        run_builder("slurp", ["--output_dir", str(users), *urls(server)])
    assert server.requests == []  # refused before any download
    with pytest.raises(DownloadError, match="was not made by `prepare_data.py slurp`"):
        run_builder("slurp", ["--output_dir", str(tmp_path / "slurp"), "--download_dir", str(users), *urls(server)])
    assert sorted(path.name for path in users.iterdir()) == ["notes.txt"]


def test_the_published_annotation_checksums_are_those_of_slurps_files(shared_data):
    """The blob ids in the table are git's ids of the real annotations (devel and test; train is not here)."""
    for name in ("devel.jsonl", "test.jsonl"):
        entry = next(p for p in PUBLISHED if p.name == name)
        path = shared_data / "slurp" / name
        assert f"git-sha1:{file_checksum(path, 'git-sha1')}" == entry.checksum
        assert path.stat().st_size == entry.size


def test_a_published_checksum_given_as_a_prefix_checks_that_prefix(mirror):
    """slurp_synth.tar.gz's MD5 is known by its first 12 hex digits only: those are checked."""
    archive = mirror[0] / "audio" / ARCHIVE
    md5 = file_checksum(archive, "md5")
    assert builder.checksum_problem(archive, Published(ARCHIVE, f"md5:{md5[:12]}")) is None
    wrong = f"{'0' if md5[0] != '0' else '1'}{md5[1:12]}"
    assert builder.checksum_problem(archive, Published(ARCHIVE, f"md5:{wrong}")) == f"md5 {md5}, published {wrong}"
    assert next(p for p in PUBLISHED if p.name == "slurp_synth.tar.gz").checksum == "md5:6186b4d2475a"


def test_validate_only_names_the_line_and_key_of_a_malformed_row(tmp_path):
    rows = read_jsonl(ASSETS_DIR / "slurp" / "devel.jsonl")[:2]
    rows[1] = {**rows[1], "recordings": [{"wer": 0.0}]}
    (tmp_path / "devel.jsonl").write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(DataError, match=rf"devel\.jsonl, line 3 \(slurp_id {rows[1]['slurp_id']}\): recordings\[0\] "
                                        "is an object without it"):
        run_builder("slurp", ["--output_dir", str(tmp_path), "--validate_only"])


def test_a_folder_holding_another_build_is_refused_before_any_download(mirror, published, server, tmp_path, capsys):
    root, _ = mirror
    output = tmp_path / "slurp"
    run_builder("slurp", ["--output_dir", str(output), "--real_only", "--audio_url", str(root / "audio"),
                          "--text_url", f"file://{root / 'text'}"])
    with pytest.raises(OutputFolderError, match=r"holds another slurp build \(other files, real_only\).* --overwrite"):
        run_builder("slurp", ["--output_dir", str(output), *urls(server)])  # with train_synthetic: another build
    assert server.requests == []  # refused before downloading train_synthetic.jsonl
    run_builder("slurp", ["--output_dir", str(output), "--real_only", *urls(server)])
    assert last_json(capsys)["built"] is False and server.requests == []  # already built: nothing downloaded
