"""Print the import graph between the project's packages as a Mermaid diagram (for
docs/architecture.md): `.venv/bin/python scripts/layers.py`. An arrow A --> B (n) means n
import statements in A name a module of B. Read from the source by grimp, import-linter's
own graph builder, so it shows what the layer contracts check."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
# top to bottom, as pyproject.toml's layer contract orders them
LAYERS = ["portal", "hl7gw", "worklist", "pacs", "dicomnet", "core"]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*LAYERS, cache_dir=None)
    edges: Counter[tuple[str, str]] = Counter()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = importer.split(".")[0], imported.split(".")[0]
            if a != b:
                details = graph.get_import_details(importer=importer, imported=imported)
                edges[a, b] += max(len(details), 1)
    print("```mermaid")
    print("flowchart TD")
    for name in LAYERS:
        print(f"    {name}[{name}]")
    for (a, b), count in sorted(edges.items(), key=lambda e: (LAYERS.index(e[0][0]),
                                                              LAYERS.index(e[0][1]))):
        print(f"    {a} -->|{count}| {b}")
    print("```")


if __name__ == "__main__":
    main()
