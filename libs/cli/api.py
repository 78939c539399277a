"""The HTTP client under the ``zapq`` commands that drive zapq's API (``zapq campaign …``, ``zapq send``,
``zapq events …``, ``zapq endpoints …``), and how those commands are registered (:func:`api_group`).

Every failure of the API is translated in one place, :meth:`ApiClient.call`, into::

    ApiCallError                      (a ZapqError)
    ├── ApiUnreachableError           connection refused, DNS, timeout  → exit 1
    └── ApiRefusedError(status)       the API answered 4xx/5xx          → exit 2 (400/409/413/422),
                                                                          3 (404), 1 (401/403/5xx)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, UsageError
from libs.errors import ZapqError
from libs.settings import Settings

#: Every call but a campaign upload: the API answers from one Postgres query.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
#: API statuses meaning "your input was refused" (exit 2); 404 is "not found" (3); any other error "failed" (1).
REFUSED_INPUT = frozenset({400, 409, 413, 415, 422})
API_URL_HELP = "zapq API base URL (default: $ZAPQ_API_URL, else http://127.0.0.1:8080)"


class ApiCallError(ZapqError):
    """A command could not get an answer it can use from the API."""

    exit_code: int = EXIT_FAILED


class ApiUnreachableError(ApiCallError):
    """No HTTP answer: connection refused, unknown host, timeout."""


class ApiRefusedError(ApiCallError):
    """The API answered with an error status; ``reason`` is its ``error`` text."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{reason} (HTTP {status})")
        self.status = status
        self.reason = reason
        self.exit_code = EXIT_NOT_FOUND if status == 404 else EXIT_USAGE if status in REFUSED_INPUT else EXIT_FAILED


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "detail"):  # zapq's error shape, then Starlette/FastAPI's
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text.strip()[:200] or response.reason_phrase


class ApiClient:
    """zapq's API over a caller-owned :class:`httpx.Client` (base URL, token set)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request → its JSON body (``None`` for ``204 No Content``), or an :class:`ApiCallError`."""
        with self._unreachable():
            response = self.http.request(method, path, **kwargs)
        self._check(response)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            reason = f"{self.http.base_url} answered {method} {path} without JSON: is it zapq's API?"
            raise ApiCallError(reason) from None

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed request: the response, its status checked, to read as it arrives. Failures become
        :class:`ApiCallError` as in :meth:`call`, also those while reading (the connection lost mid-stream:
        :class:`ApiUnreachableError`)."""
        with self._unreachable(), self.http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
            self._check(response)
            yield response

    @contextlib.contextmanager
    def _unreachable(self) -> Iterator[None]:
        """Transport failures (no answer, or the answer cut off) as :class:`ApiUnreachableError`."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ApiUnreachableError(f"the zapq API at {self.http.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ApiUnreachableError(
                f"cannot reach the zapq API at {self.http.base_url} ({str(exc) or type(exc).__name__}); "
                "is it running? (--api-url / ZAPQ_API_URL)"
            ) from exc

    @staticmethod
    def _check(response: httpx.Response) -> None:
        """An error status as :class:`ApiRefusedError` with the API's reason."""
        if response.is_error:
            reason = _reason(response)
            if response.status_code == 401:
                reason += "; the CLI sends ZAPQ_API_TOKEN"
            raise ApiRefusedError(response.status_code, reason)


ClientT = TypeVar("ClientT", bound=ApiClient)


def api_url(args: argparse.Namespace, settings: Settings) -> str:
    """``--api-url``, else the settings' ``api_url`` (``ZAPQ_API_URL``); an http(s) URL or a :class:`UsageError`."""
    url = args.api_url or settings.api_url
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"bad API URL {url!r}: use http://host:port")
    return url


def with_api(command: Callable[[argparse.Namespace, ClientT], int], client: type[ClientT]) -> Callable[..., int]:
    """Adapt ``command(args, api)`` to the CLI's ``func(args, settings)``; API failures become exit codes."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        headers = {"authorization": f"Bearer {settings.api_token}", "user-agent": "zapq-cli"}
        with httpx.Client(base_url=api_url(args, settings), headers=headers, timeout=DEFAULT_TIMEOUT) as http:
            try:
                return command(args, client(http))
            except ApiCallError as exc:
                print(f"zapq: {exc}", file=sys.stderr)
                return exc.exit_code

    return run


Command = Callable[[str, Callable[[argparse.Namespace, ClientT], int], str], argparse.ArgumentParser]


def api_group(
    sub: Any, name: str, *, summary: str, dest: str, client: type[ClientT], with_json: bool = True
) -> Command[ClientT]:
    """Add the command group ``zapq NAME …`` whose subcommands call the API through ``client``.

    Returns ``command(name, func, summary)``, which adds one subcommand running ``func(args, api)`` (see
    :func:`with_api`) and returns its parser for the arguments. ``--api-url`` is accepted before or after the
    subcommand (``SUPPRESS`` keeps a value given before it); ``with_json`` gives every subcommand ``--json``.
    """
    group = sub.add_parser(name, help=summary)
    group.add_argument("--api-url", help=API_URL_HELP)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--api-url", default=argparse.SUPPRESS, help=API_URL_HELP)
    if with_json:
        shared.add_argument("--json", action="store_true", help="machine-readable output")
    commands = group.add_subparsers(dest=dest, required=True)

    def command(
        command_name: str, func: Callable[[argparse.Namespace, ClientT], int], help_text: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(command_name, help=help_text, parents=[shared])
        p.set_defaults(func=with_api(func, client))
        return p

    return command
