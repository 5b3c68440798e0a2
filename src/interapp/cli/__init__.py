"""The command-line faces: ``interapp serve``/``admin`` (server side) and the host's commands."""
