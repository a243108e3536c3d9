"""The proof report ``python -m proofs``: exit status, text and JSON output, injected failures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

from proofs.claims import default_registry
from proofs.registry import Claim
from proofs.report import main
from proofs.symbols import r, sigma2
from proofs.vectors import Vector, inner

ROOT = Path(__file__).resolve().parents[1]


def run_proofs(*arguments, code=None):
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "proofs", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def wrong_gram_mean() -> Claim:
    p, x = Vector("p"), Vector("x")

    def derive():
        from proofs import moments

        return moments.expectation(moments.gram(p, x)), r**2 * sigma2 * inner(p, x)

    return Claim("wrong-gram-mean", "E[S(p, x)] = r^2 sigma2 (p.x), deliberately wrong.", derive)


def test_report_verifies_every_claim():
    completed = run_proofs()
    total = len(default_registry())
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "FAILED" not in completed.stdout
    assert completed.stdout.strip().splitlines()[-1].startswith(f"{total} of {total} claims verified, 0 failed")


def test_report_json_lists_every_claim_as_verified():
    completed = run_proofs("--json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(completed.stdout)
    assert document["summary"]["failed"] == 0
    assert document["summary"]["total"] == len(default_registry())
    assert [claim["number"] for claim in document["claims"]] == list(range(1, len(default_registry()) + 1))
    assert {claim["status"] for claim in document["claims"]} == {"verified"}


def test_report_help_and_invalid_selection():
    assert "--json" in run_proofs("--help").stdout
    completed = run_proofs("--only", "no-such-claim")
    assert completed.returncode == 2
    assert "no claim name contains" in completed.stderr


def test_injected_wrong_claim_fails_in_process(capsys):
    registry = default_registry()
    registry.add(wrong_gram_mean())
    assert main(["--only", "gram-mean"], registry) == 1
    output = capsys.readouterr().out
    assert "[gram-mean]" in output
    assert "FAILED: counterexample" in output
    assert output.strip().splitlines()[-1].startswith("1 of 2 claims verified, 1 failed")


def test_injected_raising_claim_fails_with_error(capsys):
    registry = default_registry()
    registry.add(Claim("broken-derivation", "A derivation that raises.", lambda: 1 / 0))
    assert main(["--only", "broken", "--json"], registry) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["claims"][0]["status"] == "FAILED"
    assert "ZeroDivisionError" in document["claims"][0]["detail"]


def test_injected_wrong_claim_sets_exit_status_one():
    code = (
        "import sys, sympy as sp\n"
        "from proofs.claims import default_registry\n"
        "from proofs.registry import Claim\n"
        "from proofs.report import main\n"
        "registry = default_registry()\n"
        "registry.add(Claim('wrong-set', 'The stable set is {1}.', lambda: ({sp.Rational(1, 2)}, {sp.S.One})))\n"
        "sys.exit(main(['--only', 'wrong-set'], registry))\n"
    )
    completed = run_proofs(code=code)
    assert completed.returncode == 1
    assert "derived set {1/2} differs from stated set {1}" in completed.stdout


def test_duplicate_claim_names_are_rejected():
    registry = default_registry()
    first = next(iter(registry))
    with pytest.raises(ValueError, match=f"a claim named '{first.name}' is already registered"):
        registry.add(first)


def test_package_import_does_not_load_sympy():
    completed = run_proofs(code="import sys, proofs; print('sympy' in sys.modules)")
    assert completed.stdout.strip() == "False"


def test_wrong_vector_claim_reports_coefficient():
    from proofs.registry import compare

    p = Vector("p")
    verified, detail = compare(p * sp.Integer(2), p)
    assert not verified
    assert "coefficient of p" in detail
