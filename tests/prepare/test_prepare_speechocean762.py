"""Tests of the speechocean762 download, against a local HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading

import pytest
from tests.prepare.prepare_helpers import (
    assert_nothing_written,
    make_kaldi_dir,
    read_csv,
    write_text,
)

from dmha_modules import cli, prepare
from dmha_modules.prepare import DownloadError


class _RangeServer(http.server.ThreadingHTTPServer):
    """Serves ``payload`` at any path, honouring ``Range: bytes=N-``."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.payload = b""
        self.ranges = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/speechocean762.tar.gz"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = self.server.payload
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = _RangeServer()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def corpus_archive(tmp_path):
    """A tiny speechocean762.tar.gz as distributed: train/, test/, .WAV files."""
    root = tmp_path / "build" / "speechocean762"
    make_kaldi_dir(root, "train", ["0001", "0002", "0007", "0008"])
    make_kaldi_dir(root, "test", ["0011"])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname="speechocean762")
    return buffer.getvalue()


def test_prepare_kaldi_downloads_the_absent_corpus(server, tmp_path):
    server.payload = corpus_archive(tmp_path)
    data = tmp_path / "data" / "speechocean762"
    outputs = prepare.prepare_kaldi(
        str(data), str(tmp_path / "prep"), download_url=server.url, jobs=1
    )
    assert (data / "train" / "wav.scp").is_file()
    assert {r["spk_id"] for r in read_csv(outputs["test"])} == {"0011"}
    archive = tmp_path / "data" / "speechocean762.tar.gz"
    assert archive.read_bytes() == server.payload
    digest = hashlib.sha256(server.payload).hexdigest()
    assert (tmp_path / "data" / "speechocean762.tar.gz.sha256").read_text().split() == [
        digest,
        "speechocean762.tar.gz",
    ]
    assert not list((tmp_path / "data").glob(".unpacking-*"))
    # Unpacking again uses the kept archive, verified against its checksum.
    server.ranges.clear()
    (tmp_path / "again").mkdir()
    os.replace(archive, tmp_path / "again" / archive.name)
    os.replace(
        archive.with_name(archive.name + ".sha256"),
        tmp_path / "again" / (archive.name + ".sha256"),
    )
    prepare.download_speechocean762(
        str(tmp_path / "again" / "speechocean762"), url=server.url
    )
    assert server.ranges == []
    assert (tmp_path / "again" / "speechocean762" / "test" / "spk2age").is_file()


def test_download_resumes_a_partial_file(server, tmp_path):
    server.payload = corpus_archive(tmp_path)
    half = len(server.payload) // 2
    write_part = tmp_path / "data" / "speechocean762.tar.gz.part"
    write_part.parent.mkdir()
    write_part.write_bytes(server.payload[:half])
    prepare.download_speechocean762(
        str(tmp_path / "data" / "speechocean762"), url=server.url
    )
    assert server.ranges == [f"bytes={half}-"]
    assert (tmp_path / "data" / "speechocean762.tar.gz").read_bytes() == server.payload
    assert not write_part.exists()


def test_download_checksum_mismatch(server, tmp_path):
    server.payload = corpus_archive(tmp_path)
    (tmp_path / "data").mkdir()
    write_text(
        tmp_path / "data" / "speechocean762.tar.gz.sha256",
        "0" * 64 + "  speechocean762.tar.gz\n",
    )
    with pytest.raises(DownloadError, match="does not match"):
        prepare.download_speechocean762(
            str(tmp_path / "data" / "speechocean762"), url=server.url
        )
    assert not (tmp_path / "data" / "speechocean762").exists()
    assert not (tmp_path / "data" / "speechocean762.tar.gz").exists()


def test_download_without_network_says_how_to_get_it_by_hand(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: refused
    url = f"http://127.0.0.1:{port}/speechocean762.tar.gz"
    data = tmp_path / "data" / "speechocean762"
    with pytest.raises(DownloadError) as error:
        prepare.prepare_kaldi(str(data), str(tmp_path / "prep"), download_url=url)
    message = str(error.value)
    assert "by hand" in message and "https://www.openslr.org/101" in message
    assert str(tmp_path / "data" / "speechocean762.tar.gz") in message
    assert not data.exists()
    assert_nothing_written(tmp_path / "prep")
    status = cli.main(
        [
            "prepare",
            "kaldi",
            "--data_folder",
            str(data),
            "--save_folder",
            str(tmp_path / "prep"),
            "--download_url",
            url,
        ]
    )
    assert status == 1
    assert "by hand" in capsys.readouterr().err


def test_unsafe_archive_is_refused(server, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    server.payload = buffer.getvalue()
    (tmp_path / "data").mkdir()
    with pytest.raises(DownloadError, match="unsafe archive"):
        prepare.download_speechocean762(
            str(tmp_path / "data" / "speechocean762"), url=server.url
        )
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "data" / "escaped.txt").exists()
    assert not (tmp_path / "data" / "speechocean762").exists()
