"""Downloading speechocean762 (OpenSLR 101), which :func:`prepare_kaldi` does
when its folder is absent: resumable, checksummed, unpacked safely."""

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

from dmha_modules.io.atomic import write_atomic
from dmha_modules.prepare.problems import DownloadError

logger = logging.getLogger(__name__)

SPEECHOCEAN762_URL = "https://www.openslr.org/resources/101/speechocean762.tar.gz"


def download_speechocean762(data_folder, url=SPEECHOCEAN762_URL, timeout=60.0):
    """Downloads and unpacks speechocean762 into ``data_folder``.

    The archive goes next to ``data_folder`` (``<parent>/<archive name>``),
    downloaded through a ``.part`` file that a later call resumes (HTTP
    Range). Its SHA-256 is recorded in ``<archive>.sha256`` the first time
    and verified every time after. It is unpacked safely (no absolute paths,
    no ``..``, no links out of the folder) into a temporary folder that is
    renamed to ``data_folder`` when complete. The archive is kept, so
    unpacking again needs no download.

    Arguments
    ---------
    data_folder : str
        Folder the corpus root ends up in.
    url : str
        Archive URL (OpenSLR resource 101 by default; a mirror may be given).
    timeout : float
        Seconds to wait for the server.

    Raises
    ------
    DownloadError
        With a message saying how to get the corpus by hand when there is no
        network, and on checksum mismatch or an unsafe archive.
    """
    data_folder = os.path.abspath(data_folder)
    parent = os.path.dirname(data_folder)
    os.makedirs(parent, exist_ok=True)
    archive = os.path.join(
        parent,
        os.path.basename(urllib.parse.urlsplit(url).path) or "speechocean762.tar.gz",
    )
    if not os.path.isfile(archive):
        try:
            _download(url, archive + ".part", timeout)
        except (OSError, urllib.error.URLError) as error:
            unpacked = os.path.join(data_folder, "train", "wav.scp")
            raise DownloadError(
                f"Could not download speechocean762 from {url} ({error}).\n"
                "To get it by hand: on a machine with internet access, download "
                "speechocean762.tar.gz from https://www.openslr.org/101/ and copy "
                f"it to {archive}, then run this again (it is unpacked into "
                f"{data_folder}); or unpack it yourself so that {unpacked} exists."
            ) from error
        _verify_checksum(archive + ".part", archive + ".sha256")
        # Not dmha_modules.io.atomic: the ".part" file must keep its fixed name
        # between calls, so that an interrupted download resumes.
        os.replace(archive + ".part", archive)
    else:
        _verify_checksum(archive, archive + ".sha256")
    _extract_tar(archive, data_folder)


def _download(url, part, timeout):
    """Downloads ``url`` into ``part``, resuming what an earlier call left."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(
        url, headers={"Range": f"bytes={have}-"} if have else {}
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:
            raise
        # The server refuses the range: the part is stale; start again.
        os.remove(part)
        return _download(url, part, timeout)
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range and sends everything
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as output, tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"Downloading {os.path.basename(url)}",
        ) as progress:
            while block := response.read(1 << 20):
                output.write(block)
                progress.update(len(block))
    if total is not None and os.path.getsize(part) != total:
        raise OSError(
            f"incomplete download: {os.path.getsize(part)} of {total} bytes; "
            "run again to resume"
        )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verify_checksum(path, sidecar):
    """Checks ``path`` against the SHA-256 in ``sidecar`` (recorded the first time)."""
    digest = _sha256(path)
    if not os.path.isfile(sidecar):
        name = os.path.basename(sidecar).removesuffix(".sha256")
        write_atomic(sidecar, lambda output: output.write(f"{digest}  {name}\n"))
        logger.info("Recorded SHA-256 %s in %s", digest, sidecar)
        return
    with open(sidecar, encoding="utf-8") as recorded:
        expected = recorded.read().split()[0]
    if digest != expected:
        os.remove(path)
        raise DownloadError(
            f"{path}: SHA-256 {digest} does not match {expected} recorded in "
            f"{sidecar}; the file was removed. Download it again, or delete the "
            "checksum file if the archive legitimately changed."
        )


def _extract_tar(archive, data_folder):
    """Unpacks ``archive`` into ``data_folder`` through a temporary folder.

    Not through :func:`dmha_modules.io.atomic.atomic_paths`: the folder renamed
    into place is the archive's top folder, inside the temporary one.
    """
    staging = tempfile.mkdtemp(dir=os.path.dirname(data_folder), prefix=".unpacking-")
    try:
        with tarfile.open(archive) as tar:
            # tarfile's "data" filter refuses absolute paths, "..", links
            # leaving the folder and device files.
            tar.extractall(
                staging, members=tqdm(tar, desc="Unpacking", unit="file"), filter="data"
            )
        entries = os.listdir(staging)
        root = staging
        if len(entries) == 1 and os.path.isdir(os.path.join(staging, entries[0])):
            root = os.path.join(staging, entries[0])  # the archive's top folder
        os.replace(root, data_folder)
    except tarfile.FilterError as error:
        raise DownloadError(
            f"{archive}: unsafe archive, refused to unpack: {error}"
        ) from None
    except tarfile.TarError as error:
        raise DownloadError(
            f"{archive}: corrupt archive ({error}); delete it and run again"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
