"""Performance profiles: loaders for profiler output, and the profiles bundled with pdscaler.

An adapter: it reads files (NumPy archives, CSV) and builds the pure
:class:`~pdscaler.domain.profile.PerfProfile` that the engine sizes pools with. Nothing is
read at import; profiles are loaded on first use and cached.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pdscaler.domain.profile import PerfProfile, ProfileError
from pdscaler.profiles.dynamo import load_dynamo
from pdscaler.profiles.splitwise import load_splitwise

__all__ = [
    "BUNDLED_PROFILES",
    "DEFAULT_PROFILE",
    "ProfileError",
    "bundled_profile_dir",
    "load_dynamo",
    "load_profile",
    "load_splitwise",
]

DEFAULT_PROFILE = "h200-llama3.1-8b-fp8-tp1"
# Each is a Dynamo profile directory under data/; its README.md states source and license.
BUNDLED_PROFILES = (DEFAULT_PROFILE,)
_DATA = Path(__file__).resolve().parent / "data"


def bundled_profile_dir(name: str) -> Path:
    """The directory of a bundled profile (which may not exist if ``name`` is not bundled)."""
    return _DATA / name


@functools.lru_cache(maxsize=32)
def load_profile(ref: str) -> PerfProfile:
    """A bundled profile by name, or the Dynamo profile directory at path ``ref``.

    Bundled profiles are single-GPU replicas. Loaded profiles are cached by ``ref`` for the
    life of the process (profiles are read-only measurements; a changed directory needs a
    restart). Raises :class:`ProfileError` when ``ref`` names neither, or the files are bad.
    """
    if ref in BUNDLED_PROFILES:
        return load_dynamo(bundled_profile_dir(ref), name=ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        return load_dynamo(path)
    raise ProfileError(
        f"unknown profile {ref!r}: neither a bundled profile ({', '.join(BUNDLED_PROFILES)}) "
        f"nor a Dynamo profile directory"
    )
