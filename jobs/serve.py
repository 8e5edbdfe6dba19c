"""Start the keyframe-selection service on a local Ray (or a running cluster) and keep it up.

    uv run python jobs/serve.py --checkpoint outputs/run/checkpoints --video-root data/synthetic
    TSPO_SERVE_TOKEN=... uv run python jobs/serve.py --video-root /data/videos --address auto --replicas 2 \
        --host 0.0.0.0 --port 8000          # or --auth-token-file ~/.tspo-ray/serve_token

Without --checkpoint the agent is freshly initialised (GET / says so). With a token (--auth-token-file, or the
TSPO_SERVE_TOKEN environment variable) every request needs `Authorization: Bearer <token>`; on a host other than
loopback the service refuses to start without one unless --insecure-no-auth is given. For `serve run` /
`serve deploy` use configs/serve.yaml instead.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

from tspo_ray.serve.auth import TOKEN_ENV


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="run folder, checkpoint file or TSPO-0.4B weights (default: random agent)")
    ap.add_argument("--video-root", action="append", default=[], help="folder videos may be read from (repeatable)")
    ap.add_argument("--url-scheme", action="append", default=[], help="URL scheme videos may use, e.g. https")
    # the feature spec: a checkpoint records its own, and these may only repeat it (without one: defaults 1 fps,
    # 128 candidates, 64 px, the embedded CLIP)
    ap.add_argument("--encoder", help="encoder spec as YAML, e.g. '{backend: hf, model: DIR}'")
    ap.add_argument("--fps", type=float, help="default candidate rate")
    ap.add_argument("--max-candidates", help="default T_c (a number, or 'all': every candidate of the grid)")
    ap.add_argument("--frame-size", help="frames are resized to this square before encoding (a number, or 'native')")
    ap.add_argument("--cache-size", type=int, default=64, help="videos kept in the feature LRU per replica")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--address", default=None, help="Ray address ('auto' for a running cluster; default: start one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--request-timeout", type=float, default=60.0,
                    help="seconds a request may take, body included (the proxy answers 408, the ingress 504 past it)")
    ap.add_argument("--auth-token-file", help=f"file holding the bearer token callers must send (default: the "
                                              f"{TOKEN_ENV} environment variable, else no token)")
    ap.add_argument("--insecure-no-auth", action="store_true",
                    help="serve beyond loopback without a token (only on a network you trust)")
    return ap.parse_args(argv)


def access_settings(args: argparse.Namespace) -> dict:
    """The token's digest (never the token: the deployment config is visible in Ray's dashboard) and the refusal
    to serve beyond loopback without one."""
    from tspo_ray.serve.auth import configured_digest, require_token_beyond_loopback

    try:  # the file first, else the environment variable when it is set
        digest = configured_digest(args.auth_token_file, TOKEN_ENV if os.environ.get(TOKEN_ENV) else None, None)
        require_token_beyond_loopback(args.host, digest is not None, args.insecure_no_auth)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return {"auth_token_sha256": digest, "insecure_no_auth": args.insecure_no_auth}


def absolute_local_paths(encoder: dict) -> dict:
    """The encoder spec with its local model/checkpoint paths made absolute (hub names and URLs stay as given)."""
    out = dict(encoder)
    for key in ("model", "pretrained"):
        value = out.get(key)
        if isinstance(value, str) and "://" not in value and Path(value).exists():
            out[key] = str(Path(value).resolve())
    return out


def settings_from_args(args: argparse.Namespace) -> dict:
    import yaml

    if not args.request_timeout > 0:
        raise SystemExit(f"error: --request-timeout {args.request_timeout}: must be a positive number of seconds")
    if not args.video_root and not args.url_scheme:
        raise SystemExit("error: give at least one --video-root (or --url-scheme); the service reads nothing else")
    for root in args.video_root:
        if not Path(root).is_dir():
            raise SystemExit(f"error: --video-root {root}: not a folder")
    checkpoint = None
    if args.checkpoint:
        if not Path(args.checkpoint).exists():
            raise SystemExit(f"error: --checkpoint {args.checkpoint}: no such file or folder")
        checkpoint = str(Path(args.checkpoint).resolve())
    features = feature_args(args)
    if "encoder" in features:
        encoder = yaml.safe_load(features["encoder"])
        if not isinstance(encoder, dict):
            raise SystemExit(f"error: --encoder {args.encoder!r}: expected a mapping, e.g. '{{backend: embedded}}'")
        features["encoder"] = absolute_local_paths(encoder)
    # Replicas run in Ray's copy of the working directory: every local path must be absolute before deployment.
    return {"checkpoint": checkpoint, "video_roots": [str(Path(r).resolve()) for r in args.video_root],
            "url_schemes": args.url_scheme, "features": features, "cache_size": args.cache_size,
            "request_timeout_s": args.request_timeout}


def check_feature_spec(settings: dict) -> None:
    """A feature spec that contradicts the checkpoint's fails here, before any Ray starts."""
    from tspo_ray.serve.service import ServeSettings, serving_feature_spec

    try:
        serving_feature_spec(ServeSettings.load(settings))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def feature_args(args: argparse.Namespace) -> dict:
    """The feature-spec fields given on the command line (the rest come from the checkpoint, or the defaults)."""
    out: dict = {}
    if args.encoder is not None:
        out["encoder"] = args.encoder
    if args.fps is not None:
        out["fps"] = args.fps
    for name, value, word in (("max_candidates", args.max_candidates, "all"),
                              ("frame_size", args.frame_size, "native")):
        if value is None:
            continue
        if str(value).lower() == word:
            out[name] = None
        elif str(value).isdigit():
            out[name] = int(value)
        else:
            raise SystemExit(f"error: --{name.replace('_', '-')} {value!r}: a whole number or '{word}'")
    return out


def http_options(args: argparse.Namespace) -> dict:
    """Serve's proxy: where it listens, and the request timeout (which the gate keeps clients from lifting)."""
    return {"host": args.host, "port": args.port, "request_timeout_s": args.request_timeout}


def gate_options(settings: dict) -> dict:
    """The Serve controller's options that put the gate (tspo_ray.serve.gate) in every proxy: token, body size,
    content type and Host checked before a body is read."""
    from tspo_ray.serve.gate import GateSettings, controller_options
    from tspo_ray.serve.service import ServeSettings

    s = ServeSettings.load(settings)
    return controller_options(GateSettings(s.auth_token_sha256, s.insecure_no_auth, s.max_body_bytes,
                                           s.request_timeout_s))


def main(argv=None) -> None:
    args = parse_args(argv)
    settings = settings_from_args(args)
    check_feature_spec(settings)
    access = access_settings(args)  # before Ray starts: a refused start costs nothing
    from ray import serve

    from tspo_ray.distributed import init_ray
    from tspo_ray.serve.app import build_app

    init_ray(args.address)
    serve.start(http_options=http_options(args), controller_options=gate_options({**settings, **access}))
    serve.run(build_app({**settings, **access}, replicas=args.replicas), name="tspo-select", route_prefix="/")
    print(json.dumps({"url": f"http://{args.host}:{args.port}", "bearer_token": access["auth_token_sha256"] is not None,
                      **settings}, indent=2))
    print("serving; Ctrl-C to stop", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):  # timed waits keep the main thread responsive to signals
            pass
    except KeyboardInterrupt:
        pass
    print("shutting down", flush=True)
    serve.shutdown()


if __name__ == "__main__":
    main()
