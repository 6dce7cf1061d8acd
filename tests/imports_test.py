"""The project's modules import one another without a circle, and the library imports
nothing from the method or the scripts: read from the files' `import` statements (those
inside functions too, which a circle would only postpone)."""

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('crest', 'libml', 'scripts')


def _module_name(path: str) -> str:
    parts = os.path.relpath(path, REPO)[: -len('.py')].split(os.sep)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def project_modules() -> dict[str, str]:
    """{module name: file} of crest/, libml/ and scripts/."""
    paths = [
        p
        for pkg in PACKAGES
        for p in glob.glob(os.path.join(REPO, pkg, '**', '*.py'), recursive=True)
    ]
    return {_module_name(p): p for p in paths}


def imports_of(path: str, module: str, modules) -> set[str]:
    """The project modules the file `path` (module `module`) imports: `from a import b`
    names a.b when it is a module, else a itself."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[: len(package.split('.')) - (node.level - 1)]
                base = '.'.join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base)
    return {name for name in found if name in modules and name != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of the graph {node: the nodes it points to} as [a, b, ..., a], or None."""
    state = {}  # 1: on the current path, 2: done.
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_the_graph_sees_imports_in_every_form():
    graph = import_graph()
    assert {'libml.datasets', 'libml.folds', 'libml.records'} <= graph['crest.loop']
    assert 'libml.datasets.longtail' in graph['libml.datasets.cifar']  # from x import module
    assert 'libml.records' in graph['libml.datasets.cifar']  # from x import name


def test_no_module_imports_itself_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, ' -> '.join(cycle)


def test_libml_imports_nothing_from_crest_or_scripts():
    for name, imported in import_graph().items():
        if name.split('.')[0] == 'libml':
            outside = sorted(m for m in imported if m.split('.')[0] != 'libml')
            assert not outside, f'{name} imports {outside}'
