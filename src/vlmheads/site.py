"""``vlmheads.site`` is ``vlmheads.sites.heads``, the head site (kept importable under its first name: the
same module object, so a patch of one is a patch of the other)."""

import sys

from .sites import heads as _heads

sys.modules[__name__] = _heads
