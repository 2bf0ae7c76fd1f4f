"""``python -m advlab`` is the ``advlab`` command (also under ``torchrun -m advlab``)."""

from advlab.cli import main

raise SystemExit(main())
