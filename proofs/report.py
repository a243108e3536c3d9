"""The proof report: check every registered claim and print the outcome.

``python -m proofs`` prints each claim as a numbered statement with its derived value and
"verified" or "FAILED", then a summary line. ``--json`` prints the same as one JSON
object. The exit status is 0 when every claim is verified, 1 when any fails, and 2 for
invalid command-line arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence

from proofs.registry import ClaimRegistry, ClaimResult, check_claim


def run_claims(registry: ClaimRegistry, names: Sequence[str] | None = None) -> list[ClaimResult]:
    """Check the claims of ``registry`` in order, or only those whose name contains one of ``names``."""
    results = []
    for number, claim in enumerate(registry, start=1):
        if names and not any(name in claim.name for name in names):
            continue
        results.append(check_claim(number, claim))
    return results


def summary_line(results: Sequence[ClaimResult], seconds: float) -> str:
    """Return ``"N of M claims verified, K failed (T s)"``."""
    verified = sum(result.verified for result in results)
    failed = len(results) - verified
    return f"{verified} of {len(results)} claims verified, {failed} failed ({seconds:.1f} s)"


def format_text(results: Sequence[ClaimResult], seconds: float) -> str:
    """Return the human-readable report."""
    lines = []
    for result in results:
        lines.append(f"{result.number}. [{result.name}] {result.statement}")
        lines.append(f"   derived: {result.derived}")
        if result.verified:
            lines.append("   verified")
        else:
            lines.append(f"   stated:  {result.expected}")
            lines.append(f"   FAILED: {result.detail}")
        lines.append("")
    lines.append(summary_line(results, seconds))
    return "\n".join(lines)


def format_json(results: Sequence[ClaimResult], seconds: float) -> str:
    """Return the report as JSON: ``{"claims": [...], "summary": {...}}``."""
    verified = sum(result.verified for result in results)
    document = {
        "claims": [
            dict(dataclasses.asdict(result), status="verified" if result.verified else "FAILED") for result in results
        ],
        "summary": {
            "total": len(results),
            "verified": verified,
            "failed": len(results) - verified,
            "seconds": round(seconds, 3),
            "text": summary_line(results, seconds),
        },
    }
    return json.dumps(document, indent=2)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``python -m proofs``."""
    parser = argparse.ArgumentParser(
        prog="python -m proofs",
        description=(
            "Check every symbolic claim about LoRA rank scaling (moments of A_0^T A_0, SGD steps, "
            "exponents of r under gamma = alpha r^-beta, sign descent, equivalences, proof gaps) "
            "and print each one as verified or FAILED."
        ),
        epilog="Exit status: 0 if every claim is verified, 1 if any claim fails, 2 for invalid arguments.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object instead of text")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="check only claims whose name contains NAME (repeat to select several); the report keeps their numbers",
    )
    return parser


def main(argv: Sequence[str] | None = None, registry: ClaimRegistry | None = None) -> int:
    """Run the report and return the exit status. ``registry`` defaults to every claim."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if registry is None:
        from proofs.claims import default_registry

        registry = default_registry()

    start = time.perf_counter()
    results = run_claims(registry, arguments.only)
    seconds = time.perf_counter() - start
    if not results:
        parser.error(f"no claim name contains any of {arguments.only}; run without --only to check every claim and see all names")

    print(format_json(results, seconds) if arguments.json else format_text(results, seconds))
    return 0 if all(result.verified for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
