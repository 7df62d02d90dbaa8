"""Tag parsing: the reference's lazy regex against the package's one-pass reader, on unclosed tags.

    python benchmarks/tag_parsing.py --sizes 8 32 64

For each size (KB of `<answer>` never closed, the worst case: every opening tag restarts the regex's search
for a closing one, to the end of the text) it times `re.findall("<answer>(.*?)</answer>")` and `rationanomaly.response.extract_answer`,
checks both give the same result, and prints the seconds and their ratio side by side. The regex grows with
the square of the size, the reader linearly; the reader alone is also timed at --large_kb (default 1 MB).
"""

from __future__ import annotations

import argparse
import re
import time

from rationanomaly.response import extract_answer

LAZY = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def seconds(function, text: str) -> tuple[float, object]:
    """Wall time of one call and its result."""
    start = time.perf_counter()
    result = function(text)
    return time.perf_counter() - start, result


def regex_last(text: str) -> str | None:
    """The reference's extraction: the last lazy match, stripped."""
    found = LAZY.findall(text)
    return found[-1].strip() if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64], help="KB of unclosed tags (regex too)")
    parser.add_argument("--large_kb", type=int, default=1024, help="KB for the reader alone")
    args = parser.parse_args(argv)
    print(f"{'KB':>6} {'regex s':>10} {'one pass s':>11} {'ratio':>9}")
    for size in args.sizes:
        text = "<answer>" * (size * 1024 // len("<answer>"))  # never closed
        slow, expected = seconds(regex_last, text)
        fast, got = seconds(extract_answer, text)
        assert got == expected, "the reader disagrees with the regex"
        print(f"{size:>6} {slow:>10.3f} {fast:>11.4f} {slow / fast:>8.0f}x")
    large = "<answer>" * (args.large_kb * 1024 // len("<answer>"))
    fast, _ = seconds(extract_answer, large)
    print(f"{args.large_kb:>6} {'(skipped)':>10} {fast:>11.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
