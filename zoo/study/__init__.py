"""Studies: estimators compared over a grid of settings and seeds, each cell an ordinary ``train.py`` run.

``python -m zoo.study run|submit|status|report STUDY.yaml``; the file's format is in :mod:`zoo.study.spec`.
"""
