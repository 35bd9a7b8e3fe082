"""Helpers shared by the test modules (importable as ``helpers`` because pytest puts ``tests/`` on sys.path
for ``tests/conftest.py``).

* :mod:`helpers.ort_session`: the ONE way tests create ONNX Runtime sessions (honours ``ADATSQ_ORT_THREADS``
  like the runner does).
* :mod:`helpers.ties`: certification of quantizer tie flips (torch reference vs another implementation).
* :mod:`helpers.runs`: recording the runner's engine calls and certifying them teacher-forced.
"""
