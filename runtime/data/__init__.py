"""Datasets where they lie: shards of image-caption pairs in, per-shard verdicts (and an enhanced copy) out.

`records` holds the one record type every reader yields (key, image bytes or path, caption, source
shard, or the error that stops it being scored) and finds the shards of a folder, brace pattern or
file; `webdataset_tar`, `parquet_table`, `jsonl` and `csv_table` are the readers, one per format;
`stream` scores many shards as one stream of pairs; `verdicts` writes a shard's verdicts as
Parquet keyed like the input; `enhance` writes the enhanced copy and the kept-keys list; `run`
skips the shards already done, scores the others and writes their outputs atomically.
"""
