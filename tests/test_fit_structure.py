"""The dose-response code stays readable: short functions, public NumPy only, no dead names."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import screenlib.doseresponse as doseresponse
from screenlib.doseresponse import CurveFit, fit_curve

PACKAGE = Path(doseresponse.__file__).parent


def _code_lines(node: ast.FunctionDef) -> int:
    """Lines of a function without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        lines -= body[0].end_lineno - body[0].lineno + 1
    return lines


def test_no_function_in_doseresponse_is_longer_than_a_screen():
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if _code_lines(node) > 80:
                    long.append(f"{path.name}::{node.name} ({_code_lines(node)} lines)")
    assert not long, long


def test_no_private_numpy_and_no_dead_names():
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        assert "_umath_linalg" not in text and "numpy.linalg._" not in text, path.name
        for dead in ("fitted_log_ic50", "curve_callables", "log_ic50_estimate"):
            assert dead not in text, (path.name, dead)
    assert not hasattr(CurveFit, "log_ic50_estimate")


def test_fit_stages_run_in_order_and_each_stage_is_its_own_function():
    from screenlib.doseresponse import fit as fit_module

    for stage in (
        "_set_up_problem",
        "_start_and_polish",
        "_fit_with_profile",
        "_interval",
        "_assess",
        "_derived_values",
    ):
        assert callable(getattr(fit_module, stage)), stage
    conc = np.repeat(1e-5 / 3.0 ** np.arange(10), 3)
    fit = fit_curve(conc, 100 / (1 + conc / 2e-8), direction="decreasing")
    assert fit.ic50_text == "20 nM" and fit.flags == ()
