"""Run ramtag's speed benchmark: exactly `ramtag bench` (same options); results go to bench-results/*.json.

    python benchmarks/bench.py                                    # Swin-L, 16 generated 4000x3000 JPEGs
    python benchmarks/bench.py --arch tiny --images 3 --size 640x480   # a quick check (seconds)
    python benchmarks/bench.py --size 384 --images 16 --no-decode-check    # the CPU target's run
    python benchmarks/bench.py --inputs a.jpg --inputs b.png --thresholds ram_tag_list_threshold.txt
    python benchmarks/bench.py --help                             # every option

The options, the measurement and the report are ramtag.bench's; this file only forwards to the CLI so
the two can never disagree.
"""

from __future__ import annotations

import sys

from ramtag.cli import main

if __name__ == "__main__":
    sys.argv = ["ramtag", "bench", *sys.argv[1:]]
    main()
