"""Keeps BUILD accurate and the dependency direction scripts -> study -> crest -> libml."""

import ast
import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_build():
    with open(os.path.join(REPO, 'BUILD')) as f:
        return f.read()


def _sources(pattern):
    return sorted(
        os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, pattern), recursive=True)
    )


def _imported_packages(path):
    """Top-level names of the modules `path` imports."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split('.')[0])
    return names


def test_every_source_file_is_in_build():
    listed = set(re.findall(r'"([\w/]+\.py)"', _read_build()))
    sources = [
        *_sources('crest/**/*.py'),
        *_sources('libml/**/*.py'),
        *_sources('scripts/*.py'),
        *_sources('study/**/*.py'),
        *_sources('tests/*.py'),
    ]
    assert sources, 'no sources found: wrong repository root?'
    missing = [s for s in sources if s not in listed]
    assert not missing, f'not in BUILD: {missing}'
    stale = [p for p in listed if not os.path.exists(os.path.join(REPO, p))]
    assert not stale, f'in BUILD but missing: {stale}'


def test_every_test_file_and_script_has_its_target():
    build = _read_build()
    for path in _sources('tests/*_test.py'):
        name = os.path.basename(path)[: -len('.py')]
        assert f'name = "{name}"' in build, f'no py_test for {path}'
    for path in _sources('scripts/*.py'):
        if os.path.basename(path) != '__init__.py':  # The installed package's, no script.
            assert f'main = "{path}"' in build, f'no py_binary for {path}'


def test_dependencies_run_from_scripts_to_study_to_crest_to_libml():
    """Imports parsed, function-level ones included: libml imports neither crest nor study,
    crest not study (experiment tooling is not the method), and no library reads flags."""
    packages = {
        'libml': {'crest', 'study', 'scripts', 'absl'},
        'crest': {'study', 'scripts', 'absl'},
        'study': {'scripts', 'absl'},
    }
    for package, forbidden in packages.items():
        paths = _sources(f'{package}/**/*.py')
        assert paths, f'no sources in {package}/'
        for path in paths:
            wrong = _imported_packages(os.path.join(REPO, path)) & forbidden
            assert not wrong, f'{path} imports {sorted(wrong)}'


def test_imported_packages_sees_every_form_of_import(tmp_path):
    path = tmp_path / 'module.py'
    path.write_text(
        'import os.path\n'
        'from study.evidence import planner\n'
        'from . import sibling\n'
        'def f():\n'
        '    import crest.loop as loop\n'
    )
    assert _imported_packages(str(path)) == {'os', 'study', 'crest'}
