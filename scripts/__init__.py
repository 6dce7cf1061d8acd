"""The command-line programs: thin entry points over crest, libml and study, run as
`python scripts/<name>.py` from a checkout. `pip install .` installs this folder as the
package crest_scripts, whose `run()` functions are the commands crest, crest-predict,
crest-diagnose and crest-report (pyproject.toml)."""

import sys


def run_as_program(module) -> None:
    """Runs `module.main` under absl as the installed command (e.g. `crest`), with the
    help of `python scripts/<name>.py`: absl's --help shows the docstring of __main__
    (here the command's generated stub) and --helpshort the flags of the module named
    by sys.argv[0] (here the command's path), so both are handed `module`'s."""
    from absl import app, flags

    sys.modules['__main__'].__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(module.main)
