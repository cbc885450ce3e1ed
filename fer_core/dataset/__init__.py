"""The Dataset view's core: what a run's model sees across a whole split, and which labels look wrong.

Why a package of its own: the embedding map, the label-issue ranking and the triage marks serve
the dashboard's Dataset page, the Errors gallery's sort key, the bench and ``train --relabel``
alike, and none of them needs Streamlit.

* :mod:`fer_core.dataset.features` -- penultimate-layer features of a loaded run (forward pre-hooks).
* :mod:`fer_core.dataset.embedding` -- their 2-D UMAP layout, cached in ``eval/<split>_embedding.npz``.
* :mod:`fer_core.dataset.label_issues` -- confident-learning ranking (cleanlab), k-fold
  probabilities, precision at k against SynthFER's planted flips or FER+ votes, baselines.
* :mod:`fer_core.dataset.triage` / :mod:`fer_core.dataset.relabel` -- marks saved in the run and
  their CSV applied to training data.

Submodules are imported by name (nothing is imported here, so reading triage marks does not load
torch or UMAP).
"""
