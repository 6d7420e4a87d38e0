"""``pairrm serve`` (HTTP reward/ranking server, embedded or on Ray Serve) and ``pairrm demo`` (Gradio page)."""

from __future__ import annotations

import argparse
import logging
import os
import socket

from ..utils.checks import duration_argument
from .options import add_attention_option, add_quantize_options, model_kwargs

__all__ = ["add_serve_parsers", "serve_command", "demo_command", "PORT_IN_USE_EXIT"]

#: Exit status of ``pairrm serve`` when it cannot listen on ``--host``/``--port`` (checked before the model loads).
PORT_IN_USE_EXIT = 1


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
    add_attention_option(serve)
    add_quantize_options(serve)
    serve.set_defaults(batch_size=32)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $PAIRRM_API_KEY)")
    serve.add_argument(
        "--max-wait-ms",
        type=duration_argument(allow_zero=True, unit="milliseconds"),
        default=5.0,
        help="longest wait for batch-mates (default: %(default)s)",
    )
    serve.add_argument(
        "--max-batch-pairs",
        type=positive,
        default=8192,
        help="queued pairs that start work without waiting for batch-mates (default: %(default)s)",
    )
    serve.add_argument("--no-batching", action="store_true", help="run each request alone (for comparison)")
    serve.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (default: %(default)s)")
    serve.add_argument("--max-pending", type=positive, default=256, help="requests admitted at once; more get 503")
    serve.add_argument("--max-items", type=positive, default=1024, help="prompts per request (default: %(default)s)")
    serve.add_argument(
        "--max-candidates", type=positive, default=64, help="candidates per prompt (default: %(default)s)"
    )
    serve.add_argument(
        "--max-pairs-per-request",
        type=positive,
        default=65_536,
        help="ordered pairs one request may cost, priced by its method before any work; more get 413 "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=duration_argument(),
        default=30.0,
        help="seconds a client has to send its request body; later gets 408 (default: %(default)s)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=duration_argument(),
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    serve.add_argument(
        "--labels",
        choices=["reference", "ignore"],
        default="reference",
        help="/get_reward: non-empty labels are reference answers, or ignore them",
    )
    serve.add_argument(
        "--group-size",
        type=positive,
        default=None,
        help="/get_reward: hold per-sample requests by prompt until this many samples arrived (OpenRLHF's "
        "n_samples_per_prompt), then score them as one group",
    )
    serve.add_argument(
        "--group-timeout",
        type=duration_argument(),
        default=30.0,
        help="seconds a group waits after its first sample before it is scored with what arrived (default: %(default)s)",
    )
    serve.add_argument(
        "--lone",
        choices=["zero", "error", "label"],
        default="zero",
        help="a group that timed out with one sample: reward 0, HTTP 408, or against its label (default: %(default)s)",
    )
    serve.add_argument("--ray", action="store_true", help="deploy on Ray Serve (needs the ray extra)")
    serve.add_argument("--replicas", type=positive, default=1, help="Ray Serve replicas (one per GPU)")

    demo = sub.add_parser("demo", help="a Gradio page to rank answers and look at the comparison matrix")
    add_model_options(demo)
    add_quantize_options(demo)
    demo.add_argument("--models", nargs="*", default=None, help="more checkpoints offered in the model picker")
    demo.add_argument("--fuser", default=None, help="GenFuser checkpoint: also show the fused answer")
    demo.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    demo.add_argument("--port", type=int, default=7860, help="default: %(default)s")


def serve_command(args: argparse.Namespace) -> int:
    """Run ``pairrm serve`` until interrupted."""
    api_key = args.api_key or os.environ.get("PAIRRM_API_KEY") or None
    options = dict(max_wait_ms=args.max_wait_ms, max_batch_pairs=args.max_batch_pairs, batching=not args.no_batching)
    limits = dict(
        max_items=args.max_items,
        max_candidates=args.max_candidates,
        labels=args.labels,
        max_pairs=args.max_pairs_per_request,
    )
    model = model_kwargs(args)
    if args.ray:
        try:
            from ..serve.ray_app import run_ray
            from ..serve.ray_ingress import build_group_deployment
        except ImportError as err:
            raise _missing("ray", err) from None
        group = {}
        if args.group_size is not None:  # one ingress replica meets the samples; the model replicas score groups
            group = dict(
                build=build_group_deployment,
                group_size=args.group_size,
                group_timeout_s=args.group_timeout,
                lone=args.lone,
            )
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
            **group,
        )
        return 0
    try:
        import uvicorn

        from ..serve.app import create_app
        from ..serve.protocol import Limits
        from ..serve.service import PairRMService
    except ImportError as err:
        raise _missing("serve", err) from None
    # bind first: a port in use is reported in a second, not after the model has loaded
    try:
        sock = _listen(args.host, args.port)
    except OSError as err:
        print(f"pairrm serve: cannot listen on {args.host}:{args.port}: {err.strerror or err}", flush=True)
        return PORT_IN_USE_EXIT
    with sock:
        from ..serve.pointwise import PointwiseRewardService, is_student_checkpoint

        # A distilled student (one-label sequence classifier) answers /get_reward pointwise; anything else is PairRM.
        service_class = PointwiseRewardService if is_student_checkpoint(args.model) else PairRMService
        service = service_class.from_pretrained(args.model, limits=Limits(**limits), **model, **options)
        rendezvous = None
        if args.group_size is not None:
            from ..serve.rendezvous import GroupRendezvous

            rendezvous = GroupRendezvous(args.group_size, args.group_timeout, lone=args.lone, limits=service.limits)
        app = create_app(
            service,
            api_key=api_key,
            max_body_bytes=int(args.max_body_mb * 2**20),
            max_pending=args.max_pending,
            body_timeout=args.body_timeout,
            rendezvous=rendezvous,
        )
        if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"pairrm serve: warning: listening on {args.host} without an API key", flush=True)
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_level="info", timeout_keep_alive=args.idle_timeout
        )
        # uvicorn announces pre-bound sockets only where it binds them itself: say it as uvicorn would
        host, port = sock.getsockname()[:2]
        address = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info(f"Uvicorn running on http://{address}:{port} (Press CTRL+C to quit)")
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn binds it: ``SO_REUSEADDR``, IPv6 when the host says so)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections queue in the kernel while the model loads
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def demo_command(args: argparse.Namespace) -> int:
    """Run ``pairrm demo`` until interrupted."""
    try:
        from ..serve.demo import build_demo
    except ImportError as err:
        raise _missing("demo", err) from None
    models = [args.model, *(args.models or [])]
    # the serve command's model options (int8 and calibration too), checked before the page is served
    demo = build_demo(models, fuser=args.fuser, **model_kwargs(args))
    demo.launch(server_name=args.host, server_port=args.port, share=False)
    return 0
