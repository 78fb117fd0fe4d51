"""Running a batch beyond one process: ``explain DIR --out OUT --engine ray``.

``cluster`` starts or joins a Ray cluster (a local one binds 127.0.0.1 only and
is shut down with the run); ``ray_engine`` runs the pipeline on it with Ray
Data, one actor per worker holding the loaded models, and hands every report
back to the driver, which alone writes results. ``wire`` is the format those
reports travel in. Ray is an optional dependency (``pip install -e ".[ray]"``):
nothing here imports it until a Ray run starts.
"""

from explainer.scale.engine import RaySettings, explain_on_ray

__all__ = ["RaySettings", "explain_on_ray"]
