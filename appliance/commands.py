"""``lpa fetch-models`` and ``lpa models``: the catalog from an operator's side."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from appliance.catalog import Catalog
from appliance.config import Node
from appliance.fetch import DEFAULT_INDEX_URL, FetchError, fetch_models
from appliance.modelstore import ModelStore

__all__ = ["fetch_command", "models_command"]


def fetch_command(
    node: Node,
    catalog: Catalog,
    names: Sequence[str],
    *,
    trust_on_first_use: bool,
    index_url: str | None,
    progress: bool,
) -> int:
    store = ModelStore(node.worker.model_path)
    wanted = list(names) or [m.model for m in node.models]
    try:
        results = fetch_models(
            catalog,
            wanted,
            store,
            trust_on_first_use=trust_on_first_use,
            index_url=index_url or DEFAULT_INDEX_URL,
            progress=progress,
        )
    except FetchError as exc:
        print(f"lpa fetch-models: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(f"{result.outcome:8} {result.name:28} {result.sha256}  {result.path}")
    return 0


def models_command(node: Node, catalog: Catalog) -> int:
    store = ModelStore(node.worker.model_path)
    served = {m.model for m in node.models}
    print(f"{'model':28} {'capability':15} {'served':7} {'present':8} {'pinned':7} licence")
    for name, manifest in sorted(catalog.manifests.items()):
        present = store.path_for(manifest).is_file()
        pinned = store.expected_sha256(manifest) is not None
        print(
            f"{name:28} {manifest.capability:15} {'yes' if name in served else 'no':7} "
            f"{'yes' if present else 'no':8} {'yes' if pinned else 'no':7} {manifest.licence}"
        )
    return 0
