"""The package's layers (the docs' Design page): every import, at any depth of a module, points down
the table or within its own layer, and every module of vidiff has a layer."""

import ast
import shutil
from pathlib import Path

import vidiff

ROOT = Path(vidiff.__file__).parent

# layer: (its modules, by prefix; the layers it may import besides its own)
LAYERS = {
    "base": (["vidiff.errors", "vidiff.spread"], []),
    "io": (["vidiff.io", "vidiff.hub.download", "vidiff.hub"], ["base"]),
    "maths": (["vidiff.diffusion"], ["base"]),  # schedule, process, gaussian (and the package's names)
    "samplers": (["vidiff.diffusion.sampling", "vidiff.diffusion.guidance"], ["base", "maths"]),
    "network": (["vidiff.nn"], ["base", "io"]),
    "conditioning": (["vidiff.conditioning"], ["base", "maths", "network"]),
    "data": (["vidiff.data"], ["base", "io"]),
    "metrics": (["vidiff.metrics"], ["base", "io"]),
    "model": (
        [
            "vidiff.config",
            "vidiff.presets",
            "vidiff.checkpoint",
            "vidiff.pipeline",
            "vidiff.request",
            "vidiff.hub.publish",
            "vidiff.hub.card",
        ],
        ["base", "io", "maths", "samplers", "network", "conditioning", "data", "metrics"],
    ),
    "tasks": (
        ["vidiff.tasks", "vidiff.protocols"],
        ["base", "io", "maths", "samplers", "network", "conditioning", "data", "metrics", "model"],
    ),
    "training": (
        ["vidiff.train"],
        ["base", "io", "maths", "samplers", "network", "conditioning", "data", "metrics", "model", "tasks"],
    ),
}
LAYERS["faces"] = (["vidiff.cli", "vidiff.studio"], list(LAYERS))  # the commands and the studio: everything


def module_name(path: Path, root: Path) -> str:
    parts = ("vidiff",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path, modules: set) -> set:
    """The vidiff modules a file imports, anywhere in it (`from vidiff import spread` is vidiff.spread)."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m == "vidiff" or m.startswith("vidiff.")}


def layer_of(module: str):
    """The layer whose longest prefix names the module (None: a module without a layer)."""
    best = None
    for name, (prefixes, _) in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (name, p)
    return best and best[0]


def upward_imports(root: Path) -> list:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    wrong = []
    for f in files:
        here = module_name(f, root)
        if here == "vidiff":  # the package's own namespace gathers the public API from every layer
            continue
        layer = layer_of(here)
        if layer is None:
            wrong.append(f"{here} has no layer: add it to LAYERS (and to the Design page)")
            continue
        for target in sorted(imports(f, root, modules)):
            if target in vidiff.MOVED:
                wrong.append(f"{here} imports {target}, a 0.1.0 path: import {vidiff.MOVED[target]}")
                continue
            to = "faces" if target == "vidiff" else layer_of(target)
            if to != layer and to not in LAYERS[layer][1]:
                wrong.append(f"{here} ({layer}) imports {target} ({to})")
    return wrong


def test_every_import_points_down_the_layers():
    assert upward_imports(ROOT) == []


def test_an_upward_import_is_found(tmp_path):
    copy = tmp_path / "vidiff"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    unet = copy / "nn" / "unet.py"
    unet.write_text(unet.read_text() + "\n\ndef _late():\n    from vidiff.diffusion import sampling\n")
    (copy / "data" / "shards.py").write_text("from vidiff import VideoDiffusion\n")
    assert upward_imports(copy) == [
        "vidiff.data.shards (data) imports vidiff (faces)",
        "vidiff.nn.unet (network) imports vidiff.diffusion.sampling (samplers)",
    ]


def test_a_module_without_a_layer_is_named(tmp_path):
    copy = tmp_path / "vidiff"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "scratch.py").write_text("")
    assert upward_imports(copy) == ["vidiff.scratch has no layer: add it to LAYERS (and to the Design page)"]


def test_at_most_ten_modules_at_the_top():
    top = sorted(p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 10, top
