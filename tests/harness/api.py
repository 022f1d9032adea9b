"""The public API of a tree, read with ``ast`` (nothing is imported or run).

For each module: its docstring, and each public function and class with its signature and
docstring (for classes, also their public methods, ``__init__`` and ``forward``). Two trees have
the same API when these are equal; ``exercises/`` must match ``solutions/``.
"""

from __future__ import annotations

import ast
from pathlib import Path


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    returns = f" -> {ast.unparse(fn.returns)}" if fn.returns else ""
    return f"{fn.name}({ast.unparse(fn.args)}){returns}"


def _public(name: str) -> bool:
    return not name.startswith("_") or name in ("__init__", "forward", "__call__")


def module_api(source: str) -> dict[str, str]:
    tree = ast.parse(source)
    api = {"<module docstring>": ast.get_docstring(tree) or ""}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
            api[node.name] = f"def {_signature(node)}\n{ast.get_docstring(node) or ''}"
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            api[node.name] = f"class {node.name}({bases})\n{ast.get_docstring(node) or ''}"
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(item.name):
                    api[f"{node.name}.{item.name}"] = f"def {_signature(item)}\n{ast.get_docstring(item) or ''}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper():
                    api[t.id] = "constant"
    return api


def tree_api(root: Path) -> dict[str, dict[str, str]]:
    return {
        p.relative_to(root).as_posix(): module_api(p.read_text(encoding="utf-8"))
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def differences(a: Path, b: Path) -> list[str]:
    """How the API of tree ``b`` differs from that of tree ``a``, one line each."""
    api_a, api_b = tree_api(a), tree_api(b)
    out = [f"{m}: only in {a.name}/" for m in sorted(set(api_a) - set(api_b))]
    out += [f"{m}: only in {b.name}/" for m in sorted(set(api_b) - set(api_a))]
    for m in sorted(set(api_a) & set(api_b)):
        for name in sorted(set(api_a[m]) | set(api_b[m])):
            x, y = api_a[m].get(name), api_b[m].get(name)
            if x is None:
                out.append(f"{m}: {name} only in {b.name}/")
            elif y is None:
                out.append(f"{m}: {name} only in {a.name}/")
            elif x != y:
                out.append(f"{m}: {name} differs:\n  {a.name}: {x.splitlines()[0]}\n  {b.name}: {y.splitlines()[0]}")
    return out
