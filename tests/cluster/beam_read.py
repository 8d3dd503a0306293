"""Run by the Beam test with the Beam venv's python: read outputs through ``engines.to_beam`` on the
DirectRunner, each into a file of JSON lines. Endpoints and the token come from the environment only.

    python beam_read.py [--in-process] OUT_DIR URI[@MAX_BYTES]...   (URI: gs://bucket/dir or bq://p.d.t)

The rows of the n-th URI go to OUT_DIR/n.jsonl. The runner has two worker processes (the partitions are
pickled to them, and they resolve credentials from the environment), or with ``--in-process`` none.
"""

from __future__ import annotations

import json
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from bpj.outputs import engines, read_bigquery, read_gcs


def main(out: str, *reads: str) -> None:
    if out == "--in-process":
        options = PipelineOptions()
        out, *rest = reads
        reads = tuple(rest)
    else:
        options = PipelineOptions(direct_running_mode="multi_processing", direct_num_workers=2)
    with beam.Pipeline(options=options) as p:
        for n, read in enumerate(reads):
            uri, _, max_bytes = read.partition("@")
            reader = read_gcs(uri) if uri.startswith("gs://") else read_bigquery(uri)
            (
                p
                | f"Read{n}" >> engines.to_beam(reader, max_bytes=int(max_bytes) if max_bytes else None)
                | f"Json{n}" >> beam.Map(json.dumps, sort_keys=True)
                | f"Write{n}"
                >> beam.io.WriteToText(os.path.join(out, f"{n}.jsonl"), num_shards=1, shard_name_template="")
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
