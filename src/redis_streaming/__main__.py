"""``python -m redis_streaming``: the same as the ``redis-streaming`` command."""

from .cli import main

raise SystemExit(main())
