import subprocess
import sys


def test_import_memgeo_and_mixture_paths_do_not_import_diffusers():
    code = (
        "import sys, memgeo, memgeo.detect, memgeo.gmm, memgeo.geometry, memgeo.scan, memgeo.mitigate, memgeo.experiments, memgeo.testbed, memgeo.explain, memgeo.guidance, memgeo.sampling, memgeo.plotting, memgeo.models\n"
        "from memgeo.gmm import ConditionalGaussianMixture\n"
        "from memgeo.detect import guidance_norm\n"
        "from memgeo.sampling import initial_noise\n"
        "m = ConditionalGaussianMixture.memorization_scenario()\n"
        "guidance_norm(m, 0, initial_noise(m, 2))\n"
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# The rooms, bottom to top (docs/conventions.md, section 1): a module imports only from its own room
# and the rooms below it. Rooms on one line are peers and do not import each other.
LAYERS = [
    {"_checks", "_util", "parameterization"},
    {"geometry"},
    {"gmm"},
    {"models"},
    {"guidance"},
    {"sampling"},
    {"detect", "mitigate", "explain"},
    {"testbed"},
    {"plotting"},
    {"scan", "experiments"},
    {"cli", "__main__"},
]


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "memgeo"


def _modules():
    import pkgutil

    import memgeo

    yield "memgeo"
    for info in pkgutil.walk_packages(memgeo.__path__, "memgeo."):
        if info.name != "memgeo.__main__":
            yield info.name


def test_every_name_in_every_all_exists():
    import importlib

    for name in _modules():
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            assert hasattr(module, public), f"{name}.__all__ names {public!r}, which it does not define"


def test_imports_point_down_only():
    """Every import inside the package (top level or in a function) goes to the module's own room or a lower one."""
    import ast
    import importlib.util
    from pathlib import Path

    level = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    bad = []
    for name in _modules():
        spec = importlib.util.find_spec(name)
        if name == "memgeo" or spec.origin is None:
            continue
        tree = ast.parse(Path(spec.origin).read_text())
        package = name if spec.submodule_search_locations else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memgeo"):
                target = node.module
            else:
                continue
            src, dst = _room(name), _room(target)
            if target == "memgeo" or src == dst:
                continue
            assert src in level and dst in level, f"{name} or {target} is in no room of LAYERS"
            if level[dst] >= level[src]:
                bad.append(f"{name} imports {target}")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)
