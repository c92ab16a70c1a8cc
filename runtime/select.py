"""`python -m runtime.select`: a keep list from a shard run's verdicts, without scoring again.

    python -m runtime.select --verdicts verdicts/ --min-overall 6 --format datacomp-npy --output keep.npy

Selects the rows with overall >= --min-overall and <= --max-overall (both inclusive; a row that
was not scored is never inside a bound) and writes them as DataComp's uid `.npy`, one key per
line, or a Parquet table (`runtime.data.keep`, the code `runtime.score --keep-min-overall` uses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.data.keep import FORMATS  # light: pyarrow and numpy are imported when writing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.select", description=__doc__.splitlines()[0])
    p.add_argument("--verdicts", required=True, metavar="DIR",
                   help="the --output folder of a shard run (SHARD.aitqe.parquet files)")
    p.add_argument("--min-overall", type=int, metavar="N", help="keep rows with overall >= N (inclusive)")
    p.add_argument("--max-overall", type=int, metavar="N", help="keep rows with overall <= N (inclusive)")
    p.add_argument("--exclude-failed", action="store_true",
                   help="leave out rows that were not scored (without a bound they are kept; a bound excludes them)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="datacomp-npy: sorted DataComp uids as two uint64 (needs uids); keys: one key per line; "
                        "parquet: key, uid, shard, overall")
    p.add_argument("--output", required=True, metavar="FILE", help="the keep list to write (outside --verdicts)")
    args = p.parse_args(argv)
    if args.min_overall is not None and args.max_overall is not None and args.min_overall > args.max_overall:
        p.error("--min-overall must be <= --max-overall")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from runtime.data import keep
    from runtime.errors import InputError

    try:
        folder, output = Path(args.verdicts), Path(args.output)
        files = keep.verdict_files(folder)
        keep.check_outside(output, folder, "--output")
        rows = keep.select(keep.rows_of(files), args.min_overall, args.max_overall, args.exclude_failed)
        n = keep.write(rows, output, args.format)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{n} keys with {keep.bounds(args.min_overall, args.max_overall)} from {len(files)} verdicts files "
          f"listed in {output} ({args.format})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
