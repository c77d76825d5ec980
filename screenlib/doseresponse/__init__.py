"""Dose-response fitting: 4PL IC50/EC50 with profile intervals and flags, GR metrics, MTT.

``fit_curve`` fits one curve; ``fit_table`` a tidy table; ``fit_wells`` a ``wells.csv``
(``fits.csv``, one row per sample x compound x readout); ``fit_mtt`` a plate-reader export.
"""

from screenlib.doseresponse.columns import CORE_COLUMNS, split_fit_columns
from screenlib.doseresponse.controls import full_effect_levels
from screenlib.doseresponse.fit import FLAGS, CurveFit, fit_curve
from screenlib.doseresponse.gr import fit_gr, gr_table, gr_values
from screenlib.doseresponse.model import four_parameter_logistic
from screenlib.doseresponse.mtt import absorbance_to_viability, fit_mtt, read_absorbance
from screenlib.doseresponse.table import fit_table, fit_wells
from screenlib.doseresponse.units import format_concentration

__all__ = [
    "CORE_COLUMNS",
    "FLAGS",
    "CurveFit",
    "absorbance_to_viability",
    "fit_curve",
    "fit_gr",
    "fit_mtt",
    "fit_table",
    "fit_wells",
    "format_concentration",
    "full_effect_levels",
    "four_parameter_logistic",
    "gr_table",
    "gr_values",
    "read_absorbance",
    "split_fit_columns",
]
