"""Which SOP classes are storage SOP classes: every one the standard has defined, retired and
trial ones included (PS3.4 B.5 and PS3.6 Annex A), so that an old modality's objects are
kept, and private ones a site names.

pynetdicom's list holds the current classes only; pydicom's UID dictionary also has the
retired ones, by name. Both are read once.
"""

from __future__ import annotations

from functools import cache

from pydicom._uid_dict import UID_dictionary
from pynetdicom import sop_class

# SOP classes named "... Storage" that are not stored by C-STORE
_NOT_STORED = frozenset({
    "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (a DICOMDIR, PS3.10)
    "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
    "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model (retired)
})


@cache
def standard() -> tuple[str, ...]:
    """Every standard storage SOP class UID, current ones first (in pynetdicom's order)."""
    current = list(sop_class._STORAGE_CLASSES.values())
    known = set(current)
    retired = [uid for uid, (name, kind, *_rest) in UID_dictionary.items()
               if kind == "SOP Class" and "Storage" in name and uid not in known
               and uid not in _NOT_STORED]
    return tuple(current + sorted(retired))


def accepted(private: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The storage SOP classes a storage SCP accepts: the standard's and ``private`` ones."""
    classes = standard()
    return classes + tuple(uid for uid in private if uid not in classes)
