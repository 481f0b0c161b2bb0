import subprocess
import sys


def test_import_is_cheap_and_the_public_names_resolve():
    code = ("import sys, emodist; heavy = [m for m in ('ray', 'torch', 'av', 'vllm', 'transformers') if m in sys.modules];"
            "print(heavy); assert emodist.load_config().mode == 'msce' and callable(emodist.run)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def emodist_import_graph() -> dict[str, set[str]]:
    """module -> the emodist modules it imports, from every import statement in emodist/
    (module level and inside functions alike)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "emodist"
    modules = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        # a package's __init__ is imported with any of its submodules: only follow real edges
        graph[name] = deps
    return graph


def test_no_import_circle_anywhere_in_the_package():
    """Data flows one way: no module imports (directly or through others) one that imports it."""
    graph = emodist_import_graph()
    assert "emodist.io.detect" in graph and "emodist.decoders.pyav" in graph
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
