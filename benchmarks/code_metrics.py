"""What makes a maintainer's change touch many places, read off the package's source.

Prints one table: modules over 300 lines (and the largest), import cycles between modules, functions over
100 lines, functions over 10 parameters, ``family ==`` tests outside the family specs, and places outside
``memgeo/detect`` that name a signal by a string literal. Run it before and after a restructure:

    python benchmarks/code_metrics.py [--root memgeo] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path


#: The library's entry points that deliberately take more than 10 parameters: each mirrors a call users already know
#: (a diffusers pipeline call, a benchmark's command line) with every option a keyword of its own, documented in
#: docs/library.md ("Entry points with many keywords"). Every other function takes at most 10 (a method's options
#: travel as one settings object).
ENTRY_POINTS = {
    "memgeo.mitigate.generate.generate": "a pipeline call: prompt, noise, sampler and the mitigation with its strength",
    "memgeo.sampling.ddim_sample": "the sampler: diffusers' DDIM call with trackers, a policy and a stopping step",
    "memgeo.geometry.operators.p_laplacian": "the estimator: field, points, p and the numerical method's knobs",
    "memgeo.experiments.leaderboard.evaluate_signals": "a benchmark: model, prompts, labels and its run settings",
    "memgeo.experiments.leaderboard.run_leaderboards": "memgeo bench's leaderboards, one keyword per flag",
    "memgeo.experiments.tradeoff.mitigation_tradeoff": "memgeo bench --mitigation, one keyword per flag",
    "memgeo.scan.audit.audit_copies": "memgeo scan --training-images, one keyword per flag",
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Modules of the package this module imports (at any depth of the file, lazy imports included)."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def measure(root: Path, signals: list[str]) -> dict:
    files = sorted(root.rglob("*.py"))
    sources = {path: path.read_text() for path in files}
    trees = {path: ast.parse(text) for path, text in sources.items()}
    names = {path: _module_name(path, root) for path in files}
    known = set(names.values())

    graph = {}
    for path, tree in trees.items():
        module = names[path]
        wanted = _imports(tree, module, path.name == "__init__.py")
        # a package's own __init__ importing its children is not a cycle of meaning
        graph[module] = {m for m in wanted if m in known and m != module and not module.startswith(m + ".")}

    lengths = {names[p]: text.count("\n") for p, text in sources.items()}
    long_functions, many_parameters = [], []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                args = node.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                count += bool(args.vararg) + bool(args.kwarg)
                if args.args and args.args[0].arg in ("self", "cls"):
                    count -= 1
                where = f"{names[path]}.{node.name}"
                if span > 100:
                    long_functions.append((where, span))
                if count > 10:
                    many_parameters.append((where, count))

    family_checks = []
    pattern = re.compile(r"\bfamily\s*(==|!=|in\b)|\.family\s*(==|!=)")
    for path, text in sources.items():
        if "models/families" in str(path) and path.parent.name == "families":
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                family_checks.append(f"{path.relative_to(root.parent)}:{number}")

    signal_names = []
    quoted = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, signals)))
    for path, text in sources.items():
        relative = path.relative_to(root.parent)
        if relative.parts[1] == "detect":
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if quoted.search(line):
                signal_names.append(f"{relative}:{number}")

    return {
        "modules": len(files),
        "lines": sum(lengths.values()),
        "largest": max(lengths.items(), key=lambda kv: kv[1]),
        "modules_over_300": sorted((m, n) for m, n in lengths.items() if n > 300),
        "modules_over_350": sorted((m, n) for m, n in lengths.items() if n > 350),
        "import_cycles": _cycles(graph),
        "functions_over_100_lines": sorted(long_functions),
        "functions_over_10_parameters": sorted(many_parameters, key=lambda kv: -kv[1]),
        "family_checks": family_checks,
        "signal_named_outside_detect": signal_names,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "memgeo"))
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()
    from memgeo.detect import SIGNALS

    result = measure(Path(args.root), sorted(SIGNALS))
    rows = [
        ("modules / lines", f"{result['modules']} / {result['lines']}"),
        ("largest module", f"{result['largest'][0]} ({result['largest'][1]} lines)"),
        ("modules over 300 lines", ", ".join(f"{m} ({n})" for m, n in result["modules_over_300"]) or "none"),
        ("import cycles", "; ".join(" <-> ".join(c) for c in result["import_cycles"]) or "none"),
        ("functions over 100 lines", ", ".join(f"{m} ({n})" for m, n in result["functions_over_100_lines"]) or "none"),
        ("functions over 10 parameters", f"{len(result['functions_over_10_parameters'])}: "
         + ", ".join(f"{m} ({n})" for m, n in result["functions_over_10_parameters"])),
        ("of them not a documented entry point", ", ".join(
            m for m, _ in result["functions_over_10_parameters"] if m not in ENTRY_POINTS) or "none"),
        ("`family ==` tests outside the specs", f"{len(result['family_checks'])}"),
        ("a signal named outside detect/", f"{len(result['signal_named_outside_detect'])}"),
    ]
    print("| measure | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")
    print("\nfamily checks:", ", ".join(result["family_checks"]))
    print("signal names outside detect/:", ", ".join(result["signal_named_outside_detect"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
