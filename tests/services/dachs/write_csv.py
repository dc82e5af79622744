"""Write the shared all-sky Gaia table as the CSV that DaCHS imports (full float precision).

Run by setup.sh; reads ../shared/data in place and writes only into the DaCHS inputs folder."""

import sys

import pyarrow.parquet as pq

source, target = sys.argv[1], sys.argv[2]
table = pq.read_table(source)
columns = table.column_names
with open(target, "w") as out:
    out.write(",".join(columns) + "\n")
    arrays = [table.column(name).to_numpy() for name in columns]
    # str() of a numpy scalar is its shortest round-tripping form (float32 as float32).
    for row in zip(*arrays):
        out.write(",".join(map(str, row)) + "\n")
