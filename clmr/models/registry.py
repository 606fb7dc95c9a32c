"""Released CLMR models by name: `clmr-mtat` -> a verified clmr .safetensors file in the local cache.

The reference releases (github.com/Spijkervet/CLMR, Apache-2.0) are downloaded once into $CLMR_HOME
(default $XDG_CACHE_HOME/clmr, else ~/.cache/clmr) with `clmr.data.download.fetch` (resumable through a
`.part` file, size checked against Content-Length), zip members are checked before anything is
unpacked, and encoder + head + tag names are converted once to one clmr file that later loads offline
without unpickling. The releases publish no checksums, so the SHA-256 of every download and converted
file is recorded in $CLMR_HOME/checksums.json when it is first made and checked whenever it is used.
`CLMR_MODEL_MIRROR` replaces the release URL prefix (air-gapped sites, tests).
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from clmr.data.download import DownloadError, fetch, read_checksums, sha256_file, write_checksums
from clmr.errors import ClmrError
from clmr.files import acquire_lock, io_errors

if TYPE_CHECKING:
    from clmr.models.clmr import CLMR

DEFAULT_MODEL = "clmr-mtat"
RELEASES_URL = "https://github.com/Spijkervet/CLMR/releases/download"
HOME_ENV = "CLMR_HOME"
MIRROR_ENV = "CLMR_MODEL_MIRROR"
MAX_MEMBERS = 16  # the release zips hold two files
MAX_MEMBER_BYTES = 1 << 30  # the released checkpoints are tens of MB
MAX_ARCHIVE_BYTES = 2 << 30
_COPY_CHUNK = 1 << 20

# The 50 outputs of the released heads: the MagnaTagATune top-50 tags in the reference's order
# (`MTT_LABELS` in the reference's examples/clmr-onnxruntime-web/index.html).
MTAT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal",
    "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice",
    "choral",
)  # fmt: skip

Load = Callable[..., "CLMR"]
Save = Callable[["CLMR", Path], Path]


class RegistryError(ClmrError):
    """An unknown model name, a bad mirror URL, or a cached file that cannot be trusted."""


@dataclass(frozen=True)
class RegisteredModel:
    """One released model: its encoder and head files (paths under the release URL) and what the
    paper reports for it (ROC-AUC, PR-AUC in % on MagnaTagATune, per probe head)."""

    name: str
    encoder: str
    head: str
    release: str
    pretrained_on: str
    batch_size: int
    epochs: int
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    parameters: int = 2_394_162  # SampleCNN (2,368,512) + linear head 512 -> 50 (25,650)
    tags: tuple[str, ...] = MTAT_TAGS
    sample_rate: int = 22050
    licence: str = "Apache-2.0"

    def source_urls(self) -> list[str]:
        """The official download URLs (also recorded in the converted file, whatever the mirror)."""
        return [f"{RELEASES_URL}/{self.encoder}", f"{RELEASES_URL}/{self.head}"]


MODELS: dict[str, RegisteredModel] = {
    m.name: m
    for m in (
        RegisteredModel(
            "clmr-mtat",
            encoder="2.0/clmr_checkpoint_10000.zip",
            head="2.0/finetuner_checkpoint_200.zip",
            release="CLMR 2.0",
            pretrained_on="MagnaTagATune",
            batch_size=96,
            epochs=10_000,
            scores={"linear": (88.7, 35.6), "mlp": (89.3, 36.0)},
        ),
        RegisteredModel(
            "clmr-mtat-1550",
            encoder="1.0/clmr_checkpoint_1550.pt",
            head="1.0-l/finetuner_checkpoint_20.pt",
            release="CLMR 1.0",
            pretrained_on="MagnaTagATune",
            batch_size=48,
            epochs=1550,
            scores={"linear": (87.71, 34.27), "mlp": (88.47, 34.96)},
        ),
    )
}


def cache_dir() -> Path:
    """$CLMR_HOME, else $XDG_CACHE_HOME/clmr, else ~/.cache/clmr."""
    if home := os.environ.get(HOME_ENV):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "clmr"


def base_url() -> str:
    """The release URL prefix, or $CLMR_MODEL_MIRROR when set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return RELEASES_URL
    if not mirror.startswith(("http://", "https://")):
        raise RegistryError(f"{MIRROR_ENV}={mirror!r}: expected an http:// or https:// base URL")
    return mirror.rstrip("/")


def is_model_name(model: object) -> bool:
    """Whether `model` names a registered model (a file or folder of that name takes precedence)."""
    return isinstance(model, str) and model in MODELS and not Path(model).exists()


def model_path(name: str) -> Path:
    """Where the converted clmr file of registered model `name` lives (whether or not it exists yet)."""
    return cache_dir() / "models" / f"{name}.safetensors"


def download_path(release_file: str) -> Path:
    """Where a release file (e.g. `2.0/clmr_checkpoint_10000.zip`) is downloaded, or placed by hand."""
    return cache_dir() / "downloads" / release_file


def cache_state(name: str) -> str:
    """`converted` (ready to load offline), `downloaded` (release files here, not converted) or `no`."""
    card = MODELS[name]
    if model_path(name).is_file():
        return "converted"
    if download_path(card.encoder).is_file() and download_path(card.head).is_file():
        return "downloaded"
    return "no"


def model_file(model: Any, load: Load, save: Save, *, progress: bool = True, retries: int = 3) -> Any:
    """`model` itself, unless it is a registered name: then the path of its verified clmr file,
    downloaded and converted on first use. `load`/`save` are `clmr.models.load_model`/`save_model`
    (passed in because that module calls this one)."""
    if not isinstance(model, str) or Path(model).exists():
        return model
    if model not in MODELS:
        if "/" not in model and os.sep not in model and not PurePosixPath(model).suffix:
            close = difflib.get_close_matches(model, list(MODELS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise RegistryError(
                f"{model}: no such file or registered model ({hint}`clmr models` lists {', '.join(MODELS)})"
            )
        return model  # a missing path: load_model says so
    target = model_path(model)
    if _verified(target):  # the usual case: nothing is written, so a read-only shared cache works
        return target
    with io_errors(cache_dir(), RegistryError, f" (the model cache; set {HOME_ENV} to a writable folder)"):
        cache_dir().mkdir(parents=True, exist_ok=True)
    # parallel first uses download and convert once
    lock = acquire_lock(cache_dir() / f".{model}.lock", f"model cache (${HOME_ENV})", error=RegistryError)
    try:
        if not _trusted(target):  # checked again: another process may have made it meanwhile
            _build(MODELS[model], target, load, save, progress=progress, retries=retries)
    finally:
        lock.release()
    return target


def _key(path: Path) -> str:
    return path.relative_to(cache_dir()).as_posix()


def _verified(target: Path) -> bool:
    """A converted file whose SHA-256 is the one recorded when it was made."""
    return target.is_file() and read_checksums(cache_dir()).get(_key(target)) == sha256_file(target)


def _trusted(target: Path) -> bool:
    """`_verified`, under the model's lock: a file without a record (an interrupted conversion) is
    removed and rebuilt; one whose checksum changed is removed and refused."""
    if not target.is_file():
        return False
    root = cache_dir()
    known = read_checksums(root)
    recorded = known.get(_key(target))
    if recorded is None:
        target.unlink()
        return False
    digest = sha256_file(target)
    if digest == recorded:
        return True
    target.unlink()
    del known[_key(target)]
    write_checksums(root, known)
    raise RegistryError(
        f"{target}: SHA-256 {digest} is not the {recorded} recorded when it was converted (changed or "
        "damaged on disk); removed it, the next run converts the model again from its verified download"
    )


def _build(
    card: RegisteredModel, target: Path, load: Load, save: Save, *, progress: bool, retries: int
) -> None:
    """Download (or reuse) the release files, check them, find encoder and head by content, and write
    one clmr file with the tag names; checksums are recorded only once everything has worked."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    known = read_checksums(root)
    encoder_src, encoder_sha = _download(card, card.encoder, known, progress=progress, retries=retries)
    head_src, head_sha = _download(card, card.head, known, progress=progress, retries=retries)
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as work:
        encoder_files = _unpack(encoder_src, Path(work) / "encoder")
        head_files = _unpack(head_src, Path(work) / "head")
        encoder, _ = _only_one(encoder_src, encoder_files, load, "a CLMR encoder checkpoint", card.name)
        _, model = _only_one(
            head_src,
            head_files,
            lambda path: load(encoder, head=path, tags=list(card.tags)),
            f"a {len(card.tags)}-tag head for {card.encoder}",
            card.name,
        )
        model.task = "multilabel"
        model.meta = {
            "registry": card.name,
            "release": card.release,
            "source": card.source_urls(),
            "source_sha256": {card.encoder: encoder_sha, card.head: head_sha},
            "pretrained_on": card.pretrained_on,
            "licence": f"{card.licence} (Spijkervet/CLMR)",
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        save(model, target)
    known.update({_key(download_path(k)): v for k, v in model.meta["source_sha256"].items()})
    known[_key(target)] = sha256_file(target)
    write_checksums(root, known)
    if progress:
        print(f"{card.name}: converted {card.encoder} + {card.head} -> {target}", file=sys.stderr)


def _download(
    card: RegisteredModel, release_file: str, known: dict[str, str], **options: Any
) -> tuple[Path, str]:
    """The local copy of a release file and its SHA-256, fetched unless already here (placed by hand,
    or an earlier run), and checked against the SHA-256 recorded at its first complete download."""
    local = download_path(release_file)
    url = f"{base_url()}/{release_file}"
    if not local.is_file():
        try:
            fetch(url, local, **options)
        except DownloadError as err:
            raise DownloadError(
                f"{card.name}: could not download {err}; without network, download that URL elsewhere and "
                f"place the file at {local} (or point {MIRROR_ENV} at a server holding {release_file})"
            ) from err
    digest, recorded = sha256_file(local), known.get(_key(local))
    if recorded is not None and digest != recorded:
        local.unlink()
        raise DownloadError(
            f"{local}: SHA-256 {digest} is not the {recorded} recorded at its first download; removed it "
            f"(rerun to download it again; if the release itself changed, `clmr models --remove "
            f"{card.name}` forgets the old record)"
        )
    return local, digest


def _refuse(source: Path, problem: str) -> DownloadError:
    """Remove a download whose content is unusable (nothing a later run would trust) and say why."""
    source.unlink(missing_ok=True)
    return DownloadError(f"{source}: {problem}; removed it, rerun to download it again")


def _unpack(source: Path, dest: Path) -> list[tuple[str, Path]]:
    """(member name, unpacked file) for each file of a zip, after checking every member (no absolute
    path, `..`, link or encryption; size limits); any other file (a .pt) is its own single member."""
    if source.suffix != ".zip":
        return [(source.name, source)]
    if not zipfile.is_zipfile(source):
        raise _refuse(source, "not a complete zip archive (truncated or damaged download)")
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            _check_members(source, members)
            files = []
            for i, member in enumerate(members):
                # unpacked under a generated name: no member path is ever joined to a folder
                out = dest / f"{i}{PurePosixPath(member.filename).suffix}"
                with archive.open(member) as src, open(out, "wb") as f:
                    copied = 0
                    while chunk := src.read(_COPY_CHUNK):
                        copied += len(chunk)
                        if copied > member.file_size:
                            raise _refuse(source, f"member {member.filename!r} is larger than it declares")
                        f.write(chunk)
                files.append((member.filename, out))
            return files
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise _refuse(source, f"damaged zip archive ({err})") from err


def _check_members(source: Path, members: list[zipfile.ZipInfo]) -> None:
    if not members or len(members) > MAX_MEMBERS:
        raise _refuse(source, f"holds {len(members)} files; a release archive holds 1 to {MAX_MEMBERS}")
    for m in members:
        name = m.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise _refuse(source, f"unsafe member {name!r} (absolute path or '..')")
        if (m.external_attr >> 16) & 0o170000 == 0o120000:
            raise _refuse(source, f"unsafe member {name!r} (a symbolic link)")
        if m.flag_bits & 0x1:
            raise _refuse(source, f"member {name!r} is encrypted")
        if m.file_size > MAX_MEMBER_BYTES:
            raise _refuse(
                source, f"member {name!r} declares {m.file_size:,} bytes (limit {MAX_MEMBER_BYTES:,})"
            )
    total = sum(m.file_size for m in members)
    if total > MAX_ARCHIVE_BYTES:
        raise _refuse(source, f"unpacks to {total:,} bytes (limit {MAX_ARCHIVE_BYTES:,})")


def _only_one(
    source: Path, files: list[tuple[str, Path]], attempt: Callable[[Path], CLMR], what: str, name: str
) -> tuple[Path, CLMR]:
    """The one unpacked file of `source` that `attempt` loads, found by content rather than by member
    name (the optimiser file next to a checkpoint does not load). A complete, safe download that holds
    none is kept (clmr may be what cannot read it) but not recorded, so nothing trusts it."""
    found, problems = [], []
    for member, path in files:
        try:
            found.append((member, path, attempt(path)))
        except ClmrError as err:
            problems.append(f"{member}: {getattr(err, 'problem', err)}")
    if len(found) == 1:
        return found[0][1], found[0][2]
    count = "no file" if not found else f"{len(found)} files ({', '.join(m for m, _, _ in found)})"
    raise DownloadError(
        f"{source}: {count} loads as {what} ({'; '.join(problems)}); `clmr models --remove {name}` deletes it"
    )


def remove(name: str) -> list[Path]:
    """Delete the converted file, downloads and partial downloads of `name` and forget their checksums
    (`clmr models --remove`): the next use downloads and records them afresh. Returns what was deleted."""
    card = MODELS[name]
    root = cache_dir()
    known = read_checksums(root)
    removed = []
    for path in (model_path(name), download_path(card.encoder), download_path(card.head)):
        for p in (path, path.with_name(path.name + ".part")):
            if p.is_file():
                p.unlink()
                removed.append(p)
        known.pop(_key(path), None)
    if root.is_dir():
        write_checksums(root, known)
    return removed
