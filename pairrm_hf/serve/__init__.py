"""PairRM as a service: ``pairrm serve`` (FastAPI + uvicorn, dynamic batching), Ray Serve scale-out, clients.

Server side needs the ``serve`` extra (``pip install "pairrm-hf[serve]"``: fastapi, uvicorn, httpx); Ray Serve the
``ray`` extra; the Gradio page (:mod:`pairrm_hf.serve.demo`) the ``demo`` extra. The clients
(:class:`~pairrm_hf.serve.client.RemotePairRM`, :func:`~pairrm_hf.serve.client.compute_score`,
:class:`pairrm_hf.trl.PairRMRemoteReward`) use only the standard library.

Modules: :mod:`.protocol` (request checks and each endpoint's computation), :mod:`.batcher` (dynamic batching in
front of the one engine), :mod:`.service` (model + batcher + metrics), :mod:`.app` (the FastAPI app),
:mod:`.ray_app` (Ray Serve deployment), :mod:`.client`, :mod:`.demo`.
"""

from .client import RemoteError, RemotePairRM, compute_score, compute_score_batch

__all__ = ["RemoteError", "RemotePairRM", "compute_score", "compute_score_batch"]
