"""The commands: `python -m heads.<name>`; each module has `main(argv) -> int`."""
