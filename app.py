"""Launcher for the AFLoc demo: ``python app.py`` serves http://127.0.0.1:7860 (localhost only, no share link).

    python app.py [--model DIR] [--models-dir DIR] [--host 127.0.0.1] [--port 7860] [--share]
                  [--auth-file FILE | $AFLOC_DEMO_AUTH=user:password | --auth user:pass]

Importing this module starts nothing and loads no model.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

MAX_FILE_SIZE = "50mb"  # uploads above this are refused by the server before they reach the demo
AUTH_ENV = "AFLOC_DEMO_AUTH"
MAX_SESSIONS = 200  # Gradio keeps per-session state (config copies, ~2 MB each) for at most this many sessions
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

logger = logging.getLogger("app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="AFLoc demo (research software, not a medical device)")
    parser.add_argument("--model", type=Path, help="model directory to start on (default: first in assets/models/)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="folder of your model directories, listed after the bundled ones "
        "(default: $AFLOC_MODELS_DIR or ~/.afloc/models)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also create a public gradio.live link (needs network)")
    parser.add_argument(
        "--auth-file",
        type=Path,
        help=f"require a login: a file whose first line is user:password (or set ${AUTH_ENV}=user:password)",
    )
    parser.add_argument(
        "--auth", help="require a login, as user:password (visible in the process list: prefer --auth-file)"
    )
    parser.add_argument("--max-pixels", type=int, default=None, help="largest image (width x height) accepted")
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="largest upload, e.g. 50mb")
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=MAX_SESSIONS,
        help=f"sessions whose state the server keeps at most; the oldest beyond go (default {MAX_SESSIONS})",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    args = parser.parse_args(argv)
    credentials, source = args.auth, "--auth"
    if credentials is None and args.auth_file is not None:
        try:
            lines = args.auth_file.expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"--auth-file {args.auth_file}: cannot read it ({type(error).__name__})")
        credentials, source = next((line.strip() for line in lines if line.strip()), ""), "--auth-file"
    if credentials is None and os.environ.get(AUTH_ENV):
        credentials, source = os.environ[AUTH_ENV], f"${AUTH_ENV}"
    args.auth = None
    if credentials is not None:
        user, _, password = credentials.partition(":")
        if not user or not password:
            parser.error(f"{source} must hold user:password")
        args.auth = (user, password)
    if args.max_sessions < 1:
        parser.error(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if args.device is not None:
        from afloc.predictor import resolve_device

        try:
            resolve_device(args.device)
        except ValueError as error:
            parser.error(f"--device: {error}")
    from afloc.hub.format import is_model_dir

    if args.model is not None and not is_model_dir(args.model.expanduser()):
        parser.error(f"--model {args.model} is not a model directory (no config.json)")
    return args


def create(argv: list[str] | None = None):
    """Parse ``argv`` and build the demo without launching it.

    Returns:
        ``(blocks, launch_kwargs, store, default_model)``: the ``gr.Blocks``, the keyword arguments for
        ``blocks.launch``, the :class:`demo.models.ModelStore` and the start-up model key (None: the store's first).
    """
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: works offline
    from demo.app import build_demo
    from demo.callbacks import MAX_PIXELS
    from demo.models import BUNDLED_MODELS_DIR, ModelStore, default_user_models_dir

    folders = [BUNDLED_MODELS_DIR, args.models_dir or default_user_models_dir()]
    if args.model is not None:
        folders.append(args.model.expanduser().resolve())
    store = ModelStore(folders, device=args.device)
    default = store.key_for(args.model) if args.model is not None else None  # an opaque key, never a path
    blocks = build_demo(store=store, default_model=default, max_pixels=args.max_pixels or MAX_PIXELS)
    launch_kwargs = {
        "server_name": args.host,
        "server_port": args.port,
        "share": args.share,
        "auth": args.auth,
        "max_file_size": args.max_file_size,
        "state_session_capacity": args.max_sessions,
        "run_history": False,  # nothing of a session (prompts, file names, scores) stays in the browser
        "footer_links": ["api", "settings"],
    }
    return blocks, launch_kwargs, store, default


def security_warnings(launch_kwargs: dict) -> list[str]:
    """What the operator should know before the server starts (exposure without a login)."""
    warnings = []
    if launch_kwargs["server_name"] not in LOCAL_HOSTS and not launch_kwargs["auth"]:
        warnings.append(
            f"--host {launch_kwargs['server_name']} without a login: anyone who can reach this machine can use the "
            f"demo and upload images; add --auth-file FILE (or ${AUTH_ENV}=user:password)"
        )
    if launch_kwargs["share"] and not launch_kwargs["auth"]:
        warnings.append("--share without a login: anyone with the link can use this demo")
    return warnings


def main(argv: list[str] | None = None) -> None:
    # at once: importing Gradio and torch takes tens of seconds on a small machine, which looks like a hang
    print("Starting the AFLoc demo: loading Gradio, torch and the model (this can take half a minute)...", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    blocks, launch_kwargs, store, default = create(argv)
    for warning in security_warnings(launch_kwargs):
        logger.warning("%s", warning)
    try:  # load the start-up model now, so the first user does not wait; a failure is shown in the UI later
        loaded = store.get(default)
        print(f"Model {loaded.name} loaded.", flush=True)
    except ValueError as error:
        logger.warning("%s", error)
    host = launch_kwargs["server_name"]
    print(f"Open http://{'127.0.0.1' if host in LOCAL_HOSTS else host}:{launch_kwargs['server_port']} in a browser.")
    blocks.launch(**launch_kwargs)


if __name__ == "__main__":
    main()
