"""Where scoring runs: this process on its share of the shards (`--shard-index i --num-shards n`,
one process per GPU), or a Ray cluster through Ray Data (`--ray`). Both write the same per-shard
outputs through the one batch front-end, `runtime.data.run`."""
