#!/usr/bin/env python
"""Django's command-line utility for Fleetgate."""

import getpass
import os
import socket
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    from django.core.management import execute_from_command_line

    from fleet.core.context import acting

    # A command's audit events name the person at the shell (no Fleetgate user signs in to run it).
    with acting(operator=f"{_login()}@{socket.gethostname()}"):
        execute_from_command_line(sys.argv)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid{os.getuid()}"


if __name__ == "__main__":
    main()
