"""The `video3d-zoo` command line: argument parsing, one handler per command, one-line errors."""
