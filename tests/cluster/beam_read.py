"""Run by the Beam test with the Beam venv's python: read an output through ``engines.to_beam`` on the
DirectRunner and write its rows as JSON lines. Endpoints and the token come from the environment only.

    python beam_read.py gs://bucket/dir|bq://p.d.t OUT.jsonl [MAX_BYTES]
"""

from __future__ import annotations

import json
import sys

import apache_beam as beam

from bpj.outputs import engines, read_bigquery, read_gcs


def main(uri: str, out: str, max_bytes: str | None = None) -> None:
    reader = read_gcs(uri) if uri.startswith("gs://") else read_bigquery(uri)
    with beam.Pipeline() as p:
        (
            p
            | engines.to_beam(reader, max_bytes=int(max_bytes) if max_bytes else None)
            | beam.Map(json.dumps, sort_keys=True)
            | beam.io.WriteToText(out, num_shards=1, shard_name_template="")
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
