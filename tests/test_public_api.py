"""What users import keeps working: the top-level namespace, and the module paths of 0.1.0 that moved."""

import json
import subprocess
import sys
from pathlib import Path

import vidiff

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_namespace_exports_the_documented_api():
    page = (DOCS / "api" / "index.md").read_text()
    for name in vidiff.__all__:
        assert getattr(vidiff, name) is not None
        assert f"`{name}`" in page, f"vidiff.{name} is exported but not listed in docs/api/index.md"
    assert vidiff.VideoDiffusion.__module__ == "vidiff.pipeline"
    assert vidiff.evaluate.__module__ == "vidiff.metrics.evaluate"
    assert "ddim" in vidiff.SAMPLERS and vidiff.get_sampler("ddim") is vidiff.SAMPLERS["ddim"].fn


def test_train_is_the_package_and_the_function(monkeypatch):
    import vidiff.train.loop as loop

    package = sys.modules["vidiff.train"]
    assert vidiff.train is package and package.loop is loop
    monkeypatch.setattr(package, "train", lambda config, **kw: ("trained", config, kw))
    assert vidiff.train("cfg", out="runs/x") == ("trained", "cfg", {"out": "runs/x"})


def test_moved_module_paths_import_with_a_warning_naming_the_new_place():
    script = """
import json, sys, warnings
import vidiff
out = {}
for old, new in vidiff.MOVED.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(f"import {old}", {})  # an import statement, as user code has it
    module = sys.modules[old]
    out[old] = {"same": module is sys.modules[new] and module.__name__ == new and module.__spec__.name == new,
                "warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught]}
from vidiff.unet import UNet3D
from vidiff.sampling_setup import SampleRequest
out["objects"] = UNet3D is vidiff.UNet3D and SampleRequest is vidiff.SampleRequest
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(result.stdout)
    assert out.pop("objects") is True
    assert set(out) == set(vidiff.MOVED) and "vidiff.unet" in out and "vidiff.evaluate" in out
    for old, seen in out.items():
        new = vidiff.MOVED[old]
        assert seen["same"], old
        assert [w[0] for w in seen["warnings"]] == ["DeprecationWarning"], (old, seen["warnings"])
        category, message, filename = seen["warnings"][0]
        assert f"{old} moved to {new}" in message
        assert filename == "<string>"  # the warning points at the line that imports the old path


def test_a_package_that_kept_its_name_gives_the_old_names():
    from vidiff.diffusion import Denoiser, prediction_to_x_eps
    from vidiff.diffusion.process import Denoiser as D
    from vidiff.hub import download_checkpoint, parse_reference
    from vidiff.hub.download import parse_reference as p

    assert Denoiser is D and parse_reference is p and callable(download_checkpoint) and callable(prediction_to_x_eps)
