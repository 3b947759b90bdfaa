"""What differs between the ESPnet releases the plugin supports."""

import re
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Optional

# ESPnetSpeakerModel unpacks (loss, accuracy, preds) from the loss from this release on.
TUPLE_RETURN_SINCE = 202509


def espnet_release(version_string: str) -> Optional[int]:
    """The YYYYMM release number of an ESPnet version string, or None."""
    match = re.match(r"(\d{6})", version_string)
    return int(match.group(1)) if match else None


def returns_tuple_for(version_string: str) -> bool:
    release = espnet_release(version_string)
    return release is None or release >= TUPLE_RETURN_SINCE


@lru_cache(maxsize=1)
def loss_returns_tuple() -> bool:
    """Whether the installed ESPnet expects (loss, accuracy, preds) from a loss."""
    try:
        return returns_tuple_for(version("espnet"))
    except PackageNotFoundError:
        return True
