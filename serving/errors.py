"""Typed errors carrying a gRPC status code, shared by the server and clients.

TensorFlow's error codes and gRPC's status codes are the same numbers, so a
TensorFlow error maps onto a gRPC status without a table; REST adds the HTTP
status TF Serving's HTTP server uses for each code (`http_status_for`, and
`code_for_http_status` back). `JobError` and the exit statuses belong to the
batch generation job.

TensorFlow-free (the REST client imports it; ``grpc`` does not load TensorFlow).
"""

from __future__ import annotations

import http

import grpc

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# The reverse direction, for REST clients: several codes share 400 and 500,
# so each HTTP status maps back to its most common code.
_CODE_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

#: Codes a caller may retry: the server may answer differently next time.
TRANSIENT_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})


class ServingError(Exception):
    """An error answered by a model server (or raised as one would be).

    Attributes:
      code: the `grpc.StatusCode`.
      message: the server's message, verbatim.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        if not isinstance(code, grpc.StatusCode):
            raise TypeError(f"code must be a grpc.StatusCode; got {code!r}")
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        """True if the same request may succeed when retried later."""
        return self.code in TRANSIENT_CODES

    @property
    def http_status(self) -> int:
        return http_status_for(self.code)

    def __reduce__(self):
        return (type(self), (self.code, self.message))


def code_from_number(number: int) -> grpc.StatusCode:
    """The gRPC code for a TensorFlow / gRPC numeric error code."""
    return _BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)


def code_from_name(name: str) -> grpc.StatusCode:
    """The gRPC code for a name such as "INVALID_ARGUMENT" or "NOT_FOUND"."""
    try:
        return grpc.StatusCode[name.upper()]
    except KeyError:
        return grpc.StatusCode.UNKNOWN


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST API answers for a status code."""
    return _HTTP_STATUS.get(code, 500)


def code_for_http_status(status: int) -> grpc.StatusCode:
    """The most likely status code behind an HTTP status from a REST server."""
    if 200 <= status < 300:
        return grpc.StatusCode.OK
    return _CODE_FOR_HTTP.get(status, grpc.StatusCode.UNKNOWN)


def http_reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Error"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def from_exception(error: BaseException) -> ServingError:
    """Turns any exception raised while serving into a ServingError.

    TensorFlow runtime errors keep their own code; argument binding errors of
    a concrete function (TypeError, ValueError) are INVALID_ARGUMENT; anything
    else is INTERNAL.
    """
    if isinstance(error, ServingError):
        return error
    code_number = getattr(error, "error_code", None)
    message = getattr(error, "message", None) or str(error)
    if code_number is not None:
        return ServingError(code_from_number(code_number), str(message))
    if isinstance(error, (TypeError, ValueError)):
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(message))
    return ServingError(grpc.StatusCode.INTERNAL,
                        f"{type(error).__name__}: {message}")


# ---------------------------------------------------------------------------
# The batch job's errors.
# ---------------------------------------------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class JobError(Exception):
    """Stops the batch generation job; `exit_code` says how (usage or failure)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code
