"""``python -m dnewton`` and the ``dnewton`` script: the command line (`app.cli`).

Stop requests (SIGTERM, SIGUSR1, SIGINT) are noted from the first line, before the
slow imports and the data, so that a job stopped while it starts still ends as
`app.stop_requests` documents rather than as the signal's default would.
"""


def main():
    from .app.stop_requests import note_from_start, settled_at_exit

    note_from_start()
    from .app.cli import main as command_line

    try:
        command_line()
    finally:
        settled_at_exit()


if __name__ == "__main__":
    main()
