"""What every part of the page shares: the handlers' error wrapper, widgets whose values the service checks, named
API parameters (app.ui, app.inspector_ui and app.research_ui build on it)."""

from __future__ import annotations

import inspect
import logging

import gradio as gr

from app import views
from app.config import LOOPBACK_HOSTS
from app.service import USER_ERRORS

log = logging.getLogger("ipa.ui")

NO_ADAPTER = "none"
"""The adapter menus' value for no adapter (the right column is then the base)."""


def cache_block_signatures() -> None:
    """Make Gradio's per-session set-up cheaper: each new session (a browser opening the page, an API client's first
    call) builds every block's config, one session after another on the server's event loop (gradio.state_holder.
    SessionState), and most of that went into inspect.signature of each block's class __init__ and inspect.getfile of
    its class, the same answers for every block of a class. Cached here (for __init__ signatures and classes only;
    anything else is asked afresh). On this page, 1,065 blocks: 47 -> 21 ms a session; 16 API users arriving at
    once waited about 1 s before the first of their requests reached its handler (BENCHMARKS.md, Serving)."""
    import gradio.blocks

    if isinstance(gradio.blocks.inspect, _CachedInspect):
        return
    gradio.blocks.inspect = _CachedInspect(gradio.blocks.inspect)


class _CachedInspect:
    """The `inspect` module as gradio.blocks sees it, with class-level answers cached (cache_block_signatures)."""

    def __init__(self, module):
        self._module = module
        self._signatures, self._files = {}, {}

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def signature(self, obj, *args, **kwargs):
        if args or kwargs or getattr(obj, "__name__", None) != "__init__":
            return self._module.signature(obj, *args, **kwargs)
        if obj not in self._signatures:
            self._signatures[obj] = self._module.signature(obj)
        return self._signatures[obj]

    def getfile(self, obj):
        if not isinstance(obj, type):
            return self._module.getfile(obj)
        if obj not in self._files:
            self._files[obj] = self._module.getfile(obj)  # an OSError (a class without a file) is raised each time
        return self._files[obj]


def with_parameters(fn, names: list[str]):
    """Give a handler that takes *values a signature with these names, so the API lists named parameters
    (gradio_client: predict(text=..., adapter=..., alpha=...)) instead of param_0, param_1, ..."""
    fn.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return fn


def checked_by_service(component):
    """A settings widget whose value reaches the service as sent: Settings checks it once, with a message that names
    the field and the page's range, where Gradio would round 2.7 samples to 3 or answer None with a generic error."""
    component.preprocess = lambda payload: payload
    return component


def as_page_errors(updates, what: str):
    """Stream `updates()` to the page; a user error becomes one pop-up, a bug a logged traceback and a one-line
    pop-up (the app keeps serving)."""
    try:
        yield from updates()
    except USER_ERRORS as err:
        raise user_error(err) from None
    except gr.Error:
        raise
    except Exception as err:  # noqa: BLE001
        raise crash(err, what) from None


def user_error(err: Exception) -> gr.Error:
    log.info("user error: %s", err)  # one line: the request was wrong, not the code
    # print_exception=False: Gradio would print a traceback for the user's mistake; the line above is the log.
    return gr.Error(views.error_text(err), title="Please check your input", print_exception=False)


def local_browser(request: gr.Request | None) -> bool:
    """Whether a request comes from a browser on this machine: a loopback client, addressed by a loopback name,
    not passed on by a proxy (a --share link's tunnel connects from this machine, but with its own Host header)."""
    if request is None or request.client is None:
        return False
    headers = {k.lower(): v for k, v in dict(request.headers or {}).items()}
    host_name = headers.get("host", "").rsplit(":", 1)[0].strip("[]")
    proxied = any(h in headers for h in ("x-forwarded-for", "forwarded", "x-real-ip"))
    return request.client.host in LOOPBACK_HOSTS and host_name in LOOPBACK_HOSTS and not proxied


def crash(err: Exception, what: str) -> gr.Error:
    # A bug in one request must leave the app serving others: log it, tell the user in one line.
    log.exception("%s failed", what)  # the traceback, once (Gradio's own print is switched off)
    return gr.Error(f"{what} failed unexpectedly ({type(err).__name__}: {views.error_text(err)}). The playground is "
                    "still running; try again or change the input.", print_exception=False)
