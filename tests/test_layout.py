"""The package's layout limits (issue 27): few top-level modules, short files and
functions (decorators and docstring included), and no import cycle between its
modules, deferred imports included."""

import ast
import os

import dmha_modules

PACKAGE_DIR = os.path.dirname(dmha_modules.__file__)
MAX_TOP_LEVEL_MODULES = 8
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def _package_files():
    """Yield (module name, path) for every .py file of the package."""
    root = os.path.dirname(PACKAGE_DIR)
    for folder, _, names in os.walk(PACKAGE_DIR):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                yield ".".join(parts), path


def _is_package(module):
    return os.path.isfile(os.path.join(os.path.dirname(PACKAGE_DIR), *module.split("."), "__init__.py"))


def _imported_modules(module, path, known):
    """The package's modules that ``module`` imports anywhere in its file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from a.b import c" imports a.b, and a.b.c when c is a module.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            # Importing a.b.c runs a, a.b and a.b.c. The packages above the
            # importing module have run before it anyway, so only an import that
            # names one of them explicitly counts (dmha_modules itself never does).
            parts = name.split(".")
            for end in range(2, len(parts) + 1):
                prefix = ".".join(parts[:end])
                implied = end < len(parts) and module.startswith(prefix + ".")
                if prefix in known and prefix != module and not implied:
                    found.add(prefix)
    return found


def _find_cycle(graph):
    """A cycle of ``graph`` as a list of nodes, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_top_level_holds_at_most_eight_modules():
    top = [name for name in os.listdir(PACKAGE_DIR) if name.endswith(".py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


def test_no_file_over_500_lines():
    long_files = {}
    for _, path in _package_files():
        with open(path, encoding="utf-8") as handle:
            count = sum(1 for _ in handle)
        if count > MAX_FILE_LINES:
            long_files[os.path.relpath(path, PACKAGE_DIR)] = count
    assert not long_files, long_files


def _function_lines(function):
    """Lines of ``function`` from its first decorator to its end, docstring included."""
    first = min([function.lineno] + [d.lineno for d in function.decorator_list])
    return function.end_lineno - first + 1


def test_no_function_over_80_lines():
    long_functions = {}
    for module, path in _package_files():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = _function_lines(node)
                if count > MAX_FUNCTION_LINES:
                    long_functions[f"{module}.{node.name} (line {node.lineno})"] = count
    assert not long_functions, long_functions


def test_no_import_cycle_deferred_imports_included():
    files = dict(_package_files())
    graph = {module: _imported_modules(module, path, files) for module, path in files.items()}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_deferred_import(tmp_path):
    """The cycle check counts imports inside functions (a check of the check)."""
    (tmp_path / "a.py").write_text("def f():\n    from dmha_modules.inference import x\n")
    found = _imported_modules("dmha_modules.nn.a", str(tmp_path / "a.py"), {"dmha_modules.inference"})
    assert found == {"dmha_modules.inference"}
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_function_lines_count_decorators_and_docstring():
    source = '@property\ndef f():\n    """One.\n\n    Two.\n    """\n    a = 1\n    return a\n'
    assert _function_lines(ast.parse(source).body[0]) == 8
