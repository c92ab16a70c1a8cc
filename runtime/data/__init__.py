"""Batch mode: pairs files and datasets where they lie, scored into verdicts (and enhanced copies).

`records` holds the one pair type (`Record`, which `runtime.scorer.Pair` is: image, caption, id,
key, source file and line, uid, or the error that stops it being scored) and finds the shards an
`--input` names; `formats` is the registry of input formats, one module each (`webdataset_tar`,
`parquet_table`, `jsonl`, `csv_table`); `run` is the one front-end (lock, resume, score, write);
`stream` scores every format's records as one stream of pairs; the outputs are `jsonl_output`
(verdicts JSONL, resumed by line) and `shard_output` (per-shard verdicts Parquet from `verdicts`,
enhanced copies from `enhance` with img2dataset's files beside them from `sidecars`, the keep list
from `keep`, which `runtime.select` also uses; resumed by shard); `progress` is what they show.

    input --find_shards/formats--> shards --read--> records --stream: prepare, encode, decode, parse-->
    (record, verdict) --output--> verdicts JSONL | SHARD.aitqe.parquet (+ enhanced copy, keep list)
"""
