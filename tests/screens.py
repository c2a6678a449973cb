"""Screenshots the browser tests take of each flow: into the test's own folder, and, when
PORTAL_SCREENSHOTS names a folder (docs/screenshots when the user guide's pictures are
renewed), there too under a stable name."""

from __future__ import annotations

import os
from pathlib import Path


def shot(page, name: str, folder: Path | None = None, *, full_page: bool = True) -> None:
    targets = [folder] if folder is not None else []
    if os.environ.get("PORTAL_SCREENSHOTS"):
        targets.append(Path(os.environ["PORTAL_SCREENSHOTS"]))
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / f"{name}.png"), full_page=full_page)
