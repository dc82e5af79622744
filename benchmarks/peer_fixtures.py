"""Open every HATS catalog under the given folders with LSDB and survey_engine; compare the rows.

The folders are the peers' test fixtures (hats' and LSDB's ``tests/data``, from their git
repositories: the wheels do not ship them). A folder that LSDB cannot open either (index
catalogs, catalogs without metadata) is listed as LSDB-NO and not counted against survey_engine.

    python benchmarks/peer_fixtures.py HATS_REPO/tests/data LSDB_REPO/tests/data
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

PROPERTY_FILES = ("hats.properties", "properties", "collection.properties")


def main(roots: list[Path]) -> int:
    import lsdb

    import survey_engine as se

    warnings.filterwarnings("ignore")
    folders = [
        p
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_dir() and any((p / f).exists() for f in PROPERTY_FILES)
    ]
    peer_opens = same = 0
    for path in folders:
        try:
            try:
                peer = lsdb.open_catalog(path)
            except TypeError:  # margins and other auxiliary catalogs
                peer = lsdb.read_hats(path)
            want = len(peer.compute())
        except Exception as exc:  # noqa: BLE001 - a fixture LSDB itself cannot open
            print(f"LSDB-NO  {path}: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        peer_opens += 1
        try:
            got = len(se.open_catalog(path).compute())
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            print(f"FAIL     {path}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        same += got == want
        print(f"{'OK' if got == want else 'DIFF':8} {path} lsdb={want} survey_engine={got}")
    print(
        f"{len(folders)} catalog folders; LSDB opens {peer_opens}; survey_engine opens {same} of them with LSDB's rows"
    )
    return 0 if same == peer_opens else 1


if __name__ == "__main__":
    sys.exit(main([Path(p) for p in sys.argv[1:]]))
