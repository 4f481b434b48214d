"""Human evaluation as SR3 ran it: two-alternative forced-choice (2AFC) studies.

`make` writes a study folder (trial lists per rater and the images), `server` serves it to raters
in the browser and appends every answer to `responses.jsonl`, `analyze` turns the answers into
fool rates, Bradley–Terry strengths, rater agreement and metric–human correlations, and
`simulate` answers a study with simulated raters of known preferences.
"""
