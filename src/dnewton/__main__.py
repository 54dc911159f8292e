"""``python -m dnewton`` and the ``dnewton`` script: the command line (`app.cli`).

Stop requests (SIGTERM, SIGUSR1, SIGINT) are noted from the first line, before the
slow imports and the data, so that a job stopped while it starts still ends as
`app.stopping` documents rather than as the signal's default would.
"""


# Allocations from this size up get pages of their own, returned to the system when
# freed (glibc's M_MMAP_THRESHOLD; -3 is its mallopt code).
MMAP_THRESHOLD = 1 << 20


def _return_freed_arrays():
    """Have glibc map every allocation of `MMAP_THRESHOLD` bytes or more on its own.

    By default glibc raises that threshold to the size of the last such block freed
    (up to 32 MiB), so after the first large array goes, arrays of 1-32 MiB (a
    batch's sums, parameter vectors, a subset's rows) come from the heap, where
    the ones freed stay resident between larger live ones: measured on full
    Fashion-MNIST, 17 MB more peak memory per rank. Nothing elsewhere than glibc.
    """
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: its allocator's own policy
        pass


def main():
    from .app.stopping import note_from_start, settled_at_exit

    note_from_start()
    _return_freed_arrays()
    from .app.cli import main as command_line

    try:
        command_line()
    finally:
        settled_at_exit()


if __name__ == "__main__":
    main()
