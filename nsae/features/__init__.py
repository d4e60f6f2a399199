"""`python -m nsae.features RUN_DIR`: browsable pages of every feature of a run's SAEs.

One streaming pass over held-out tokens (the run's evaluation split by default) gives each
feature's firing density, mean and max activation, an activation histogram, its top
activating contexts and contexts sampled from lower quantiles (`collect.py`); its decoder
direction is read through the model's unembedding (`vocab.py`) and against the other
features' directions and, with `--compare`, another run's (`pairing.py`). `pages.py` writes
one self-contained HTML page per layer and an index (`template.py`: the inline CSS and JS).
`runs.py` opens run directories and SAELens-format layer folders; `stream.py` rebuilds the
run's tokens and activations.
"""
