"""Benchmarks: speed, search quality and reliability measured for real (results in the README and
benchmarks/README.md). Each module is a command, run from the repository root as ``python -m benchmarks.NAME``;
they import each other as ``benchmarks.NAME``, and the tests reach them the same way."""
