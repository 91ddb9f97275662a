"""What every part of the page shares: the handlers' error wrapper, a config field's widget, widgets whose values the
service checks, named API parameters (app.ui, app.inspector_ui and app.research_ui build on it)."""

from __future__ import annotations

import inspect
import logging
import typing

import gradio as gr

from app import views
from app.config import LOOPBACK_HOSTS
from app.service import USER_ERRORS
from ipa.args import field_docs
from ipa.errors import describe_range

log = logging.getLogger("ipa.ui")

NO_ADAPTER = "none"
"""The adapter menus' value for no adapter (the right column is then the base)."""


def bound(fn, *given):
    """A module-level handler `fn(part, ..., value, ...)` with its first parameters given (the service's parts it uses,
    the tab's task or menus): Gradio reads it as fn without them. Its name, docstring and remaining parameters with
    their types are fn's, so a gr.Request is still passed in and the API lists the same parameters; a generator stays
    one, so a streamed handler still streams. (functools.partial hides the types from Gradio, and with them the
    gr.Request.)

        >>> button.click(bound(stop_run, service.training, classroom), None, status)   # doctest: +SKIP
    """
    if inspect.isgeneratorfunction(fn):
        def handler(*values, **options):
            yield from fn(*given, *values, **options)
    else:
        def handler(*values, **options):
            return fn(*given, *values, **options)
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())[len(given):]
    hints = typing.get_type_hints(fn)
    handler.__signature__ = signature.replace(parameters=parameters)
    handler.__annotations__ = {name: hint for name, hint in hints.items() if name in {p.name for p in parameters} | {"return"}}
    handler.__name__, handler.__qualname__, handler.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return handler


def with_parameters(fn, names: list[str]):
    """Give a handler that takes *values a signature with these names, so the API lists named parameters
    (gradio_client: predict(text=..., adapter=..., alpha=...)) instead of param_0, param_1, ..."""
    fn.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return fn


def first_sentence(doc: str) -> str:
    """A field docstring's first sentence, on one line (the API page, MCP and a widget's info show one line)."""
    text = " ".join(doc.split())
    return text.split(". ")[0].rstrip(".") + "."


def field_line(config: type, name: str, low: float, high: float | None, whole: bool = False) -> str:
    """The field's docstring's first sentence and its range: what a widget's info and the API page say of it.

        >>> from app.settings import Settings
        >>> field_line(Settings, "n", *Settings.LIMITS["n"])
        'Samples per column: 3 by default, so that one lucky or unlucky sample does not decide the verdict; a whole number from 1 to 4.'
    """
    return f"{first_sentence(field_docs(config)[name])[:-1]}; {describe_range(low, high, whole)}."


def field_widget(config: type, name: str, value, label: str, limits: tuple | None = None, *, step: float | None = None,
                 info: str | None = None, note: str = "", **options) -> gr.Slider | gr.Number:
    """The widget of the config field `name`: a slider over its range when given a step, else a number box (of whole
    numbers for a whole field); its info is field_line (or `info`), then `note`. limits: (lowest, highest, whole),
    config.LIMITS[name] unless given (the training tab passes PAGE_FIELDS' under its TrainingLimits).

    A number box is not given the range as Gradio's minimum and maximum: Gradio would refuse a value out of range
    itself, with its own message; the service's check (Settings, TrainRequest.check) refuses it with one that names
    the field and the range. A slider needs its range; its value may still be marked checked_by_service.

        >>> n = field_widget(Settings, "n", 3, "Samples per column", step=1)   # doctest: +SKIP
    """
    low, high, whole = limits or config.LIMITS[name]
    info = " ".join(filter(None, (field_line(config, name, low, high, whole) if info is None else info, note)))
    if step is not None:
        return gr.Slider(low, high, value=value, step=step, label=label, info=info, **options)
    return gr.Number(value, precision=0 if whole else None, label=label, info=info, **options)


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
