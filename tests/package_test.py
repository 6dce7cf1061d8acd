"""The installable package (pyproject.toml): its pins are requirements.txt's, it holds
every package and data file of the code, and its commands run from an install outside
the checkout (installed offline, without dependencies, into a temporary folder)."""

import ast
import fnmatch
import glob
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The folders the package installs, by their installed name.
SOURCES = {'crest': 'crest', 'libml': 'libml', 'study': 'study', 'crest_scripts': 'scripts'}


def _pyproject():
    with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)


def _requirements():
    with open(os.path.join(REPO, 'requirements.txt')) as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith('#')]


def _packages_on_disk():
    """{installed package name: folder} of every folder holding an __init__.py."""
    found = {}
    for name, folder in SOURCES.items():
        for init in glob.glob(os.path.join(REPO, folder, '**', '__init__.py'), recursive=True):
            rel = os.path.relpath(os.path.dirname(init), os.path.join(REPO, folder))
            parts = [] if rel == '.' else rel.split(os.sep)
            found['.'.join([name, *parts])] = os.path.dirname(init)
    return found


def test_dependencies_are_the_pins_of_requirements():
    project = _pyproject()['project']
    runtime, tests = project['dependencies'], project['optional-dependencies']['test']
    # The runtime pins first, then the tests' and lint's, in the same order.
    assert _requirements() == runtime + tests
    assert all('==' in pin for pin in runtime + tests)
    assert any(pin.startswith('tensorflow==') for pin in runtime)


def test_packages_are_every_folder_with_an_init_and_its_data_files():
    setuptools = _pyproject()['tool']['setuptools']
    on_disk = _packages_on_disk()
    assert {'crest', 'libml.algorithms', 'libml.datasets', 'study.report'} <= set(on_disk)
    assert sorted(setuptools['packages']) == sorted(on_disk)
    assert setuptools['package-dir'] == {'crest_scripts': 'scripts'}
    # Every other file of a package (e.g. imagenet127.tsv) is declared package data.
    data = setuptools['package-data']
    missing = []
    for package, folder in on_disk.items():
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isdir(path) or name.endswith(('.py', '.pyc')):
                continue
            if name.endswith('.sh') and package == 'crest_scripts':  # Checkout tools.
                continue
            if not any(fnmatch.fnmatch(name, p) for p in data.get(package, [])):
                missing.append(os.path.relpath(path, REPO))
    assert not missing, f'not package data in pyproject.toml: {missing}'


def test_no_module_imports_scripts_by_its_checkout_name():
    """scripts/ is installed as crest_scripts: an absolute `scripts` import would only
    work in the checkout."""
    wrong = []
    for folder in SOURCES.values():
        for path in glob.glob(os.path.join(REPO, folder, '**', '*.py'), recursive=True):
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or '']
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                if any(n.split('.')[0] == 'scripts' for n in names):
                    wrong.append(os.path.relpath(path, REPO))
    assert not wrong


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The package installed with pip into a folder (its commands in <folder>/bin),
    built from a copy of its sources: an in-tree build would leave build/ in the
    checkout."""
    tmp = tmp_path_factory.mktemp('package')
    src = tmp / 'src'
    for folder in SOURCES.values():
        shutil.copytree(
            os.path.join(REPO, folder), src / folder, ignore=shutil.ignore_patterns('__pycache__')
        )
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(os.path.join(REPO, name), src / name)
    target = tmp / 'site'
    proc = subprocess.run(
        [
            *(sys.executable, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check'),
            *('--no-deps', '--no-build-isolation', '--no-index', '--target', str(target)),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _run_installed(target, argv):
    """Runs argv with only the install importable, from a folder outside the checkout."""
    env = {**os.environ, 'PYTHONPATH': str(target), 'TF_CPP_MIN_LOG_LEVEL': '3'}
    return subprocess.run(
        argv, cwd=target.parent, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_installed_commands_show_their_script_help(installed):
    commands = _pyproject()['project']['scripts']
    assert {'crest', 'crest-predict', 'crest-diagnose', 'crest-report'} <= set(commands)
    ran = []
    for command, entry in commands.items():
        module, _, function = entry.partition(':')
        assert module.startswith('crest_scripts.') and function == 'run', entry
        source = os.path.join(REPO, 'scripts', module.split('.', 1)[1] + '.py')
        assert os.path.exists(os.path.join(installed, 'bin', command))
        if not os.path.exists(source):  # Not written yet on this branch.
            continue
        with open(source) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        proc = _run_installed(installed, [os.path.join(installed, 'bin', command), '--helpshort'])
        # absl's help exits with status 1; the help is what `python scripts/X.py` shows:
        # the script's docstring, then its own flags.
        assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
        assert proc.stdout.startswith(doc.splitlines()[0]), proc.stdout[:500]
        own_flags = proc.stdout.split(f'{os.path.join(installed, "bin", command)}:\n', 1)
        assert len(own_flags) == 2 and own_flags[1].startswith('  --'), proc.stdout[-2000:]
        ran.append(command)
    assert {'crest', 'crest-diagnose', 'crest-report'} <= set(ran)


@pytest.mark.slow
def test_installed_modules_and_data_come_from_the_install(installed):
    source = (
        'import json, crest.loop, crest_scripts, libml.algorithms, study.report\n'
        'from libml.datasets import imagenet127\n'
        'mods = [crest.loop, crest_scripts, libml.algorithms, study.report, imagenet127]\n'
        'print(json.dumps([[m.__file__ for m in mods], len(imagenet127.read_map()[1])]))\n'
    )
    proc = _run_installed(installed, [sys.executable, '-c', source])
    assert proc.returncode == 0, proc.stderr[-3000:]
    files, classes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(installed) + os.sep) for f in files), files
    assert classes == 127


@pytest.mark.slow
def test_installed_diagnose_finds_its_map_from_any_folder(installed, tmp_path):
    """crest-diagnose reads the regime map installed with the package, not a path
    relative to the folder it runs in (a real finished run of the study as its input)."""
    run = tmp_path / 'run'
    run.mkdir()
    record = os.path.join(REPO, 'docs', 'evidence', 'runs', 'g100_b10_o0', 'total_19200')
    shutil.copy(os.path.join(record, 'fixmatch', 'fold_1', 'results.json'), run)
    diagnose = os.path.join(installed, 'bin', 'crest-diagnose')
    proc = _run_installed(installed, [diagnose, f'--run={run}'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'No regime map' not in proc.stdout
    assert 'The regime map (Fashion-MNIST-LT, 2 generations of 19,200 steps) says:' in proc.stdout
