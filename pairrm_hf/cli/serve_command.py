"""``pairrm serve`` (HTTP reward/ranking server, embedded or on Ray Serve) and ``pairrm demo`` (Gradio page)."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_serve_parsers", "serve_command", "demo_command"]


def _missing(extra: str, err: ImportError) -> RuntimeError:
    return RuntimeError(f'{err.name or err} is not installed; pip install "pairrm-hf[{extra}]"')


def add_serve_parsers(sub, add_model_options, positive) -> None:
    """Add the ``serve`` and ``demo`` subcommands to the ``pairrm`` parser."""
    serve = sub.add_parser(
        "serve",
        help="serve PairRM over HTTP (/rank /compare /score /get_reward /health /metrics)",
        description="An HTTP server with dynamic batching across concurrent requests. Binds "
        "127.0.0.1 unless --host says otherwise.",
    )
    add_model_options(serve)
    serve.set_defaults(batch_size=32)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $PAIRRM_API_KEY)")
    serve.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest wait for batch-mates (default: %(default)s)"
    )
    serve.add_argument("--max-batch-pairs", type=positive, default=8192, help="pairs per batch (default: %(default)s)")
    serve.add_argument("--no-batching", action="store_true", help="run each request alone (for comparison)")
    serve.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (default: %(default)s)")
    serve.add_argument("--max-pending", type=positive, default=256, help="requests admitted at once; more get 503")
    serve.add_argument("--max-items", type=positive, default=1024, help="prompts per request (default: %(default)s)")
    serve.add_argument(
        "--max-candidates", type=positive, default=64, help="candidates per prompt (default: %(default)s)"
    )
    serve.add_argument(
        "--labels",
        choices=["reference", "ignore"],
        default="reference",
        help="/get_reward: non-empty labels are reference answers, or ignore them",
    )
    serve.add_argument("--ray", action="store_true", help="deploy on Ray Serve (needs the ray extra)")
    serve.add_argument("--replicas", type=positive, default=1, help="Ray Serve replicas (one per GPU)")

    demo = sub.add_parser("demo", help="a Gradio page to rank answers and look at the comparison matrix")
    add_model_options(demo)
    demo.add_argument("--models", nargs="*", default=None, help="more checkpoints offered in the model picker")
    demo.add_argument("--fuser", default=None, help="GenFuser checkpoint: also show the fused answer")
    demo.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    demo.add_argument("--port", type=int, default=7860, help="default: %(default)s")


def serve_command(args: argparse.Namespace) -> int:
    """Run ``pairrm serve`` until interrupted."""
    api_key = args.api_key or os.environ.get("PAIRRM_API_KEY") or None
    options = dict(max_wait_ms=args.max_wait_ms, max_batch_pairs=args.max_batch_pairs, batching=not args.no_batching)
    limits = dict(max_items=args.max_items, max_candidates=args.max_candidates, labels=args.labels)
    model = dict(
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        backbone_config=args.backbone_config,
        backend=args.backend,
    )
    if args.ray:
        try:
            from ..serve.ray_app import run_ray
        except ImportError as err:
            raise _missing("ray", err) from None
        run_ray(
            args.model,
            replicas=args.replicas,
            host=args.host,
            port=args.port,
            api_key=api_key,
            max_body_bytes=int(args.max_body_mb * 2**20),
            max_pending=args.max_pending,
            limits=limits,
            model_kwargs=model,
            **options,
        )
        return 0
    try:
        import uvicorn

        from ..serve.app import create_app
        from ..serve.protocol import Limits
        from ..serve.service import PairRMService
    except ImportError as err:
        raise _missing("serve", err) from None
    service = PairRMService.from_pretrained(args.model, limits=Limits(**limits), **model, **options)
    app = create_app(
        service, api_key=api_key, max_body_bytes=int(args.max_body_mb * 2**20), max_pending=args.max_pending
    )
    if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pairrm serve: warning: listening on {args.host} without an API key", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    """Run ``pairrm demo`` until interrupted."""
    try:
        from ..serve.demo import build_demo
    except ImportError as err:
        raise _missing("demo", err) from None
    models = [args.model, *(args.models or [])]
    demo = build_demo(models, fuser=args.fuser, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    demo.launch(server_name=args.host, server_port=args.port, share=False)
    return 0
