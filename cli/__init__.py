"""The Click layer of skinzoo (installed as ``skinzoo_cli``): parsing, printing, exit codes."""
