"""Layer 7: the commands the Makefile runs, each a thin ``main(argv) -> int``
over the library, errors through parallel_stacks.runner."""

__all__: list[str] = []
