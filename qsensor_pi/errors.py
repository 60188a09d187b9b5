"""Errors the service raises for the API to turn into HTTP answers with a reason."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class InvalidArgument(ServiceError):
    status_code = 422
