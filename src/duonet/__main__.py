"""``python -m duonet``: the command line (``demo``, ``connect``, ``listen``, ``udp``, ``ip``)."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
