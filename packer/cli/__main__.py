"""``python -m packer.cli``: the ``packer`` command."""

from . import main

main()
