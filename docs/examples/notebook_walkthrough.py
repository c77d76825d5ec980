"""A notebook's first session with screenlib: run a plate, open the run, look at it.

Run it as a script (``python docs/examples/notebook_walkthrough.py OUT``) or paste the cells
into Jupyter. The test suite runs it on a small simulated plate.
"""

# %% Run a plate (the same as `screenlib run`; a rerun into the same folder resumes)
import sys
from pathlib import Path

import screenlib

example = Path(__file__).resolve().parents[2] / "example_plates" / "milademetan_nb"
plate = Path(sys.argv[1]) if len(sys.argv) > 1 else example / "export"
platemap = Path(sys.argv[2]) if len(sys.argv) > 2 else example / "platemap.csv"
out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("results") / "walkthrough"
run = screenlib.analyze_plate(plate, platemap, out, scheduler="sync")

# %% The tables are pandas DataFrames
print(run)
print(run.wells[["well", "sample", "compound", "concentration_molar", "apoptotic_fraction"]].head())
fitted = run.fits[run.fits["readout"] == "apoptotic_fraction"]
print(fitted[["sample", "compound", "ic50_text", "pic50", "hill_slope", "flags"]])
print(run.fits_full.columns.tolist())  # every parameter, interval and test
print("noticed:", run.notes)

# %% One curve and one plate map, as figures to save or show
first = fitted.iloc[0]
figure = run.plot_curve(first["sample"], first["compound"], "apoptotic_fraction")
figure.savefig(out / "walkthrough_curve.png", dpi=120)
heatmap = run.plate_heatmap("apoptotic_fraction")
heatmap.save(out / "walkthrough_heatmap.png")  # an image, as in the report

# %% Open it again later, from the folder alone
again = screenlib.open_run(out)
assert again.fits.equals(run.fits)
print("saved", out / "walkthrough_curve.png", "and", out / "walkthrough_heatmap.png")
