"""Every error class of vidiff lives in vidiff/errors.py; the modules that used to define one re-export it."""

import ast
import importlib
from pathlib import Path

import pytest

import vidiff
from vidiff import errors

PACKAGE = Path(vidiff.__file__).parent
OLD_HOMES = [
    ("vidiff.diffusion.sampling", "SamplerError"),
    ("vidiff.hub.publish", "PublishError"),
    ("vidiff.nn.text", "TextEncoderError"),
    ("vidiff.io.files", "RunLockedError"),
    ("vidiff.hub.download", "HubError"),
    ("vidiff.checkpoint", "CheckpointError"),
    ("vidiff.io.decode", "ShortVideoError"),
    ("vidiff.errors", "DataError"),
    ("vidiff.errors", "MetricsError"),
    ("vidiff.errors", "MissingWeightsError"),
    ("vidiff.studio.paths", "StudioError"),
]


def _error_classes_outside_errors_py():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = [ast.unparse(b) for b in node.bases]
                if node.name.endswith("Error") or any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append(f"{path.relative_to(PACKAGE.parent)}: {node.name}")
    return found


def test_every_error_class_is_defined_in_errors_py():
    assert _error_classes_outside_errors_py() == []


@pytest.mark.parametrize("module, name", OLD_HOMES)
def test_old_import_paths_give_the_same_class(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)
    assert issubclass(getattr(errors, name), errors.VidiffError)
