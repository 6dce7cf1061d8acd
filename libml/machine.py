"""The machine a run or benchmark runs on: speeds compare only within one machine, and
what does not fit in its memory is refused before it is built; how a process on it fares."""

import os
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


def available_memory() -> int | None:
    """Bytes of memory available for new allocations (Linux's MemAvailable, else the
    free pages); None where neither can be read."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, AttributeError):
        return None


def check_fits(needed: int, what: str, remedy: str) -> None:
    """Raises MemoryError naming `what` if `needed` bytes exceed the memory available."""
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(
            f'{what} needs about {needed / 2**30:.1f} GiB of memory, and '
            f'{available / 2**30:.1f} GiB is available: {remedy}'
        )


def process_state(pid: int) -> tuple[str, float]:
    """Process PID's state letter ('T': stopped by a signal; '' where /proc is not, or
    the process is gone) and the CPU seconds it has used."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return '', 0.0
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
