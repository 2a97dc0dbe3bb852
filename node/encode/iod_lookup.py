"""Memoise highdicom's IOD table lookup.

highdicom decides, for every source image of a SEG, whether its SOP class is a multi-frame IOD
(``is_multiframe_image``), and for every object it creates whether its IOD has Content Date and Time,
by walking the standard's module and attribute tables in ``_standard_utils.is_attribute_in_iod``:
about 0.5 ms an image, 35 ms for a SEG's own class; 0.2 s of a 300-slice CT's 0.45 s SEG.
The answer depends on its arguments only (the tables are constants of the installed highdicom), so a
cache keyed by them gives the same answers. The function is private to highdicom: if a release renames
it, :func:`install` leaves highdicom as it is and the SEG is only slower.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

_installed = False


def install() -> bool:
    """Replace ``highdicom._standard_utils.is_attribute_in_iod`` by a memoised wrapper (once); True if active."""
    global _installed
    if _installed:
        return True
    import highdicom  # noqa: F401  (imports its submodules, which bind the function by name)
    from highdicom import _standard_utils

    original = getattr(_standard_utils, "is_attribute_in_iod", None)
    if original is None:
        log.debug("highdicom has no is_attribute_in_iod: IOD lookups are not memoised")
        return False
    memoised = _memoised(original)
    # Modules that imported it by name (highdicom.base asks it twice for every object it creates: 70 ms
    # for a SEG) hold their own reference: replace it wherever it was bound.
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "highdicom" and getattr(module, "is_attribute_in_iod", None) is original:
            module.is_attribute_in_iod = memoised  # type: ignore[attr-defined]
    _installed = True
    return True


def _memoised(original: Callable[..., bool]) -> Callable[..., bool]:
    @functools.lru_cache(maxsize=4096)
    def cached(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
        return bool(original(attribute, sop_class_uid, list(exclude) if exclude is not None else None))

    @functools.wraps(original)
    def lookup(attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None) -> bool:
        exclude = tuple(exclude_path_elements) if exclude_path_elements is not None else None
        # A UID subclass and its str hash alike; str() keeps the cache key a plain string.
        return cached(str(attribute), str(sop_class_uid), exclude)

    lookup.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return lookup
