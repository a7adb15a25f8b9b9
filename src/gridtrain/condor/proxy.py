"""The grid proxy that jobs of an ``x509_proxy`` profile carry: found, and long-lived enough.

Layer: batch-system edge, read-only. A proxy file (``$X509_USER_PROXY``, else
``/tmp/x509up_u<uid>``) holds the proxy certificate, its key and the chain up to the user's
certificate; it is usable until the first of those certificates expires. Submitting workers
whose proxy dies before they could finish wastes the slots they hold, so gridtrain refuses and
says how to renew it. (A VOMS attribute certificate inside the proxy may expire earlier; ask
``voms-proxy-info --actimeleft`` for that.)
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from gridtrain.condor.site import SiteProfile
from gridtrain.errors import CondorError

DEFAULT_RUNTIME_HOURS = 24.0  # when the profile names no run-time limit
RENEW = "voms-proxy-init --voms cms --valid 192:00"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def proxy_path() -> Path:
    return Path(os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}")


def proxy_expires(path: Path) -> datetime:
    """When the proxy in ``path`` stops being usable (the earliest end of its certificates)."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise CondorError(
            f"{path}: no grid proxy; create one with `{RENEW}` (or point X509_USER_PROXY at it)"
        ) from None
    except OSError as err:
        raise CondorError(f"{path}: cannot read the grid proxy: {err.strerror}") from None
    ends = []
    for block in _PEM_CERT.findall(content):
        try:
            ends.append(x509.load_pem_x509_certificate(block).not_valid_after_utc)
        except ValueError as err:
            raise CondorError(
                f"{path}: not a valid grid proxy ({err}); renew it: {RENEW}"
            ) from None
    if not ends:
        raise CondorError(f"{path}: holds no certificate, not a grid proxy; renew it: {RENEW}")
    return min(ends)


def check_proxy(
    profile: SiteProfile, path: Path | None = None, now: datetime | None = None
) -> None:
    """Refuse (``CondorError``) when the profile needs a proxy that would die before its jobs."""
    if not profile.x509_proxy:
        return
    path = path or proxy_path()
    hours_needed = profile.runtime_hours() or DEFAULT_RUNTIME_HOURS
    left = (proxy_expires(path) - (now or datetime.now(UTC))).total_seconds() / 3600
    if left < hours_needed:
        state = "expired" if left <= 0 else f"expires in {left:.1f} h"
        raise CondorError(
            f"{path}: the grid proxy {state}, before worker jobs of profile {profile.name} could "
            f"finish ({hours_needed:g} h); renew it: {RENEW}"
        )
