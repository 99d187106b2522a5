"""Corpora built from real images whose annotations are turned into report text (no real reports exist for them).

* :mod:`training.realdata.fundus`: IDRiD fundus photographs with lesion boxes -> grader-style reports.
* :mod:`training.realdata.cxr`: COVID-QU-Ex films with infection and lung masks, TBX11K films with TB boxes and
  the real clinical notes of ``covid_notes`` -> radiologist-style reports (written by
  :mod:`training.realdata.cxr_reports`).

The reports are **derived from the annotations** and stand in for the reports these images never came with; the
annotations are used only to write that text, never as a training signal on pixels. Each corpus is written in
PhantomCXR's layout (``manifest.csv``, ``images/``, ``annotations/<split>.json``), so that training, the
localization monitor and ``training evaluate --dataset phantom`` read it unchanged.
"""
