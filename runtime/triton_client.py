"""Client example: a whole generation through the Triton denoiser over HTTP (tritonclient).

``python -m adatsq.runtime.triton_client DIR --url 127.0.0.1:8000 [--seed 0] [--samples 1] [-o latents.npy]``
sends the same initial noise and conditioning that ``adatsq-run DIR --seed S --samples N`` generates (tiny models:
synthetic conditioning, :func:`synthetic_request`) to the ``adatsq_denoiser`` model of a server started on
``DIR/triton`` or ``DIR/triton_cpu`` (``launch.sh`` there), and writes the final latents (unpacked to
(N, C, h, w) for Flux) to ``-o`` and the per-step records (latents, timesteps, velocities, answering
configuration ids) to ``-o``'s ``.steps.npz``. Needs ``pip install tritonclient[http]``; a real deployment
sends its own prompt embeddings in the same tensors (``DIR/triton/adatsq_denoiser/config.pbtxt``).
Errors (no such directory, a server that cannot be reached or answers with an error) print one line and exit
with code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch import nn

from adatsq.export.triton import DENOISER_MODEL, STEP_OUTPUTS

__all__ = ["TritonClientError", "denoiser_record", "infer", "main", "synthetic_request", "unpack_latents"]


class TritonClientError(RuntimeError):
    """The request cannot be made or the server refused it; the message says which."""


def denoiser_record(out_dir: Path) -> dict[str, Any]:
    """``DIR/triton/adatsq_denoiser/1/denoiser.json``: the denoiser's tensor names and step models."""
    path = Path(out_dir) / "triton" / DENOISER_MODEL / "1" / "denoiser.json"
    if not path.is_file():
        raise TritonClientError(f"{path} is missing; is {out_dir} a packaged adatsq output directory?")
    return json.loads(path.read_text())


class _Capture(nn.Module):
    """Stands in for the transformer for one call: keeps the keyword arguments the family's sampler passes."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        from diffusers.configuration_utils import FrozenDict

        self.config = FrozenDict(config)
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # placement(): CPU, float32
        self.kwargs: dict[str, Any] = {}

    def forward(self, **kwargs: Any) -> tuple[torch.Tensor]:
        self.kwargs = dict(kwargs)
        return (torch.zeros_like(kwargs["hidden_states"]),)


def synthetic_request(out_dir: Path, seed: int = 0, n: int = 1) -> dict[str, np.ndarray]:
    """The denoiser's inputs for ``n`` samples of seed ``seed``: noise and synthetic conditioning drawn exactly as
    :meth:`adatsq.runtime.runner.EngineRunner.generate` draws them, turned into graph tensors by the family's
    own sampler call and export adapter (the step-0 feeds of the runner), without the timestep."""
    from adatsq.core.models.base import timesteps_for
    from adatsq.core.models.registry import family_of, get_spec
    from adatsq.core.schedule import load_schedule
    from adatsq.export.graph_io import adapter_for

    out_dir = Path(out_dir)
    record = denoiser_record(out_dir)
    schedule = load_schedule(out_dir / "schedule.json")
    spec = get_spec(schedule.model)
    family = family_of(spec)
    model = _Capture(json.loads((out_dir / "transformer_config.json").read_text()))
    g = torch.Generator().manual_seed(seed)
    cond = family.synthetic_conditioning(spec, model, n, g)
    noise = family.sample_noise(spec, model, tuple(schedule.resolution), n, g)
    _, timesteps = timesteps_for(family, spec, schedule.steps, tuple(noise.shape[1:]))
    family.velocity(model, noise.clone(), timesteps[0], cond, spec)
    feeds = adapter_for(family.name).feeds(model.config, model.kwargs)
    names = [record["latent_input"], *record["passthrough_inputs"]]
    return {name: np.ascontiguousarray(feeds[name]) for name in names if name in feeds}


def unpack_latents(out_dir: Path, tokens: np.ndarray) -> np.ndarray:
    """Flux's packed latent tokens (N, h/2·w/2, 4C) → (N, C, h, w), as the runner returns them."""
    from adatsq.core.models.flux import unpack
    from adatsq.core.models.registry import family_of, get_spec
    from adatsq.core.schedule import load_schedule

    schedule = load_schedule(Path(out_dir) / "schedule.json")
    spec = get_spec(schedule.model)
    config = json.loads((Path(out_dir) / "transformer_config.json").read_text())
    c, h, w = family_of(spec).latent_shape(spec, _Capture(config), tuple(schedule.resolution))
    return unpack(torch.from_numpy(np.asarray(tokens, dtype=np.float32)), c, h, w).numpy()


def infer(
    url: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = ("latent_out", *STEP_OUTPUTS),
    model: str = DENOISER_MODEL,
    timeout: float = 600.0,
) -> dict[str, np.ndarray]:
    """One HTTP inference of ``model`` at ``url`` (host:port) with binary tensors; returns ``outputs``."""
    try:
        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype
    except ImportError:
        raise TritonClientError("this client needs tritonclient: pip install 'tritonclient[http]'") from None
    client = http.InferenceServerClient(url=url, connection_timeout=timeout, network_timeout=timeout)
    try:
        request = []
        for name, value in inputs.items():
            arr = np.ascontiguousarray(value)
            tensor = http.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            tensor.set_data_from_numpy(arr, binary_data=True)
            request.append(tensor)
        wanted = [http.InferRequestedOutput(o, binary_data=True) for o in outputs]
        result = client.infer(model, request, outputs=wanted)
        return {o: result.as_numpy(o) for o in outputs}
    except InferenceServerException as exc:
        raise TritonClientError(f"{model} at {url}: {exc}") from None
    except OSError as exc:
        raise TritonClientError(f"cannot reach tritonserver at {url}: {exc}") from None
    finally:
        client.close()


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="host:port of the HTTP endpoint")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples", type=int, default=1, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("triton_latents.npy"))
def main(directory: Path, url: str, seed: int, samples: int, output: Path) -> None:
    """Generate through the adatsq_denoiser of a running tritonserver and write the final latents."""
    try:
        result = infer(url, synthetic_request(directory, seed=seed, n=samples))
        latents = unpack_latents(directory, result["latent_out"])
    except (TritonClientError, FileNotFoundError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, latents)
    np.savez(output.with_suffix(".steps.npz"), **{k: result[k] for k in STEP_OUTPUTS})
    ids = [int(c) for c in result["step_config_ids"]]
    click.echo(f"wrote {output} {tuple(latents.shape)}; configuration per step: {ids}")


if __name__ == "__main__":
    main()
