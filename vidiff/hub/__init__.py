"""The Hugging Face Hub: checkpoints named `org/name` downloaded once (download.py), and a run
published as a model folder (publish.py, `vidiff push`) with its model card (card.py).

The package itself gives the names of download.py
(``from vidiff.hub import download_checkpoint``).
"""

from vidiff.hub.download import (
    CHECKPOINT_FILES,
    PREFIX,
    download_checkpoint,
    hub_cache_dir,
    hub_library,
    parse_reference,
    upload_folder,
)

__all__ = [
    "CHECKPOINT_FILES",
    "PREFIX",
    "download_checkpoint",
    "hub_cache_dir",
    "hub_library",
    "parse_reference",
    "upload_folder",
]
