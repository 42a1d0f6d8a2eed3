"""The Hugging Face Hub, both ways: a model named `org/name` (or `hf://org/name`, `hf://org/name@revision`)
is a snapshot of exactly the files a checkpoint needs, downloaded once into the Hugging Face cache
(`HF_HUB_CACHE`, or `$VIDIFF_CACHE/hub` when only VIDIFF_CACHE is set; offline with `HF_HUB_OFFLINE=1`);
a folder prepared for publishing goes up in one commit. `huggingface_hub` is an optional dependency:
`pip install "vidiff[hub]"`.

A local path always wins: `org/name` is looked up on the Hub only when no such file or folder exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

from vidiff.errors import HubError
from vidiff.io import files

PREFIX = "hf://"
# what a checkpoint is made of (resolve_checkpoint): the EMA weights are taken when a repo holds them
CHECKPOINT_FILES = ("config.json", "model.safetensors", "ema.safetensors")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}")
_INSTALL = 'pip install "vidiff[hub]"'


def parse_reference(ref) -> Optional[tuple[str, Optional[str]]]:
    """(repo id, revision or None) of `hf://org/name[@revision]` or a bare `org/name`; None for anything
    that cannot name a Hub model (a `pathlib.Path` is always a local path)."""
    if not isinstance(ref, str):
        return None
    explicit = ref.startswith(PREFIX)
    name, _, revision = ref[len(PREFIX) :].partition("@") if explicit else (ref, "", "")
    name = name.rstrip("/")
    if not _REPO_ID.fullmatch(name) or ".." in name or "--" in name or name.endswith(".git"):
        if explicit:
            raise HubError(f"{ref!r} does not name a Hub model: write ORG/NAME (hf://ORG/NAME, hf://ORG/NAME@REVISION)")
        return None
    return name, revision or None


def hub_library():
    """The huggingface_hub module, or an error that says how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(
            f"loading and publishing models on the Hugging Face Hub needs huggingface_hub: {_INSTALL}"
        ) from None
    return huggingface_hub


def hub_cache_dir(cache_dir=None) -> Optional[str]:
    """Where Hub models are cached: `cache_dir`, else HF_HUB_CACHE when set (the Hub's own override), else
    `$VIDIFF_CACHE/hub` when VIDIFF_CACHE is set, else None: the Hugging Face default, shared with other tools."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("VIDIFF_CACHE") and not os.environ.get("HF_HUB_CACHE"):
        return str(files.cache_dir("hub"))
    return None


def download_checkpoint(
    ref: str,
    *,
    revision: Optional[str] = None,
    cache_dir=None,
    local_files_only: bool = False,
    token: Union[str, bool, None] = None,
) -> Path:
    """The cached snapshot folder of the Hub model `ref` (fetched when not cached yet): config.json and
    the weights, nothing else. `revision` (a branch, tag or commit) overrides one given as `@revision`."""
    repo_id, rev = parse_reference(ref) or (ref, None)
    revision = revision or rev
    hf = hub_library()
    cache_dir = hub_cache_dir(cache_dir)
    from huggingface_hub.utils import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    at = f" at revision {revision!r}" if revision else ""
    try:
        folder = Path(
            hf.snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
                allow_patterns=list(CHECKPOINT_FILES),
                library_name="vidiff",
            )
        )
    except RevisionNotFoundError:
        raise HubError(
            f"the Hub model {repo_id!r} has no revision {revision!r}; give a branch, tag or commit "
            f"it has (hf://{repo_id}@main)"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"no model {repo_id!r} on the Hugging Face Hub (or it is private or gated: log in with "
            f"`hf auth login` or set HF_TOKEN); for a local checkpoint, check the path"
        ) from None
    except LocalEntryNotFoundError as e:
        why = "local_files_only" if local_files_only else "offline (HF_HUB_OFFLINE=1) or the Hub cannot be reached"
        cache = cache_dir or hf.constants.HF_HUB_CACHE
        raise HubError(
            f"the Hub model {repo_id!r}{at} is not in the Hugging Face cache {str(cache)!r} ({why}): "
            f"download it once with network access (unset HF_HUB_OFFLINE), point HF_HUB_CACHE or "
            f"cache_dir at a cache that holds it, or pass a local folder ({type(e).__name__})"
        ) from None
    except (OSError, ValueError) as e:  # connection errors, HTTP errors, invalid names
        raise HubError(f"cannot fetch the Hub model {repo_id!r}{at}: {e}") from None
    if not all((folder / f).is_file() for f in CHECKPOINT_FILES[:2]):
        raise HubError(
            f"the Hub model {repo_id!r}{at} is not a vidiff model: it has no "
            f"{' and '.join(CHECKPOINT_FILES[:2])} (publish one with `vidiff push RUN {repo_id}`)"
        )
    return folder


def upload_folder(
    folder,
    repo_id: str,
    *,
    private: bool = False,
    token: Union[str, bool, None] = None,
    commit_message: str = "Upload vidiff model",
    files: Optional[list] = None,
) -> str:
    """Create the model repo `repo_id` if needed and upload `folder` (only `files`, when given) as one
    commit; returns the commit's URL."""
    parse_reference(PREFIX + repo_id)  # the name's form, before any request
    hf = hub_library()
    api = hf.HfApi(token=token, library_name="vidiff")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=files,
        )
    except OSError as e:  # HTTP errors (401: no token; 403: no write access), connection errors
        raise HubError(
            f"cannot upload to the Hub model {repo_id!r}: {e}; log in with `hf auth login` (or set "
            f"HF_TOKEN) to an account that may write to {repo_id.split('/')[0]!r}, or build the folder "
            f"only with --dry-run"
        ) from None
    return str(getattr(info, "commit_url", None) or info)
