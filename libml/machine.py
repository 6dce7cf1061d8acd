"""The machine a benchmark runs on: speeds compare only within one machine."""

import platform


def cpu_model() -> str:
    """The CPU's model name, e.g. 'AMD EPYC' ('unknown CPU' where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'
