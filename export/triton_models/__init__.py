"""Sources of the Triton python-backend models (``denoiser.py``, ``ort_config.py``).

:func:`adatsq.export.triton.write_triton_repository` copies them into the model repositories as
``<model>/1/model.py``. They run inside ``tritonserver``'s python-backend stub, which imports neither adatsq nor
torch (numpy and onnxruntime only; torch and safetensors only for weight inputs on the GPU), so adatsq never
imports them: this package exists so that the files install with adatsq.
"""
