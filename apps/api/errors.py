"""DRF exception handler: database errors that the input caused are client errors, and
so are the services' domain errors that name a field."""

import logging

from django.db import DataError, IntegrityError
from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.catalog.services import FallbacksInvalid

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, FallbacksInvalid):
        return Response({exc.field: [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ProtectedError):
        return Response(
            {"detail": "It is still in use: remove what refers to it first."},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, IntegrityError):
        log.info("management API: integrity error %s", type(exc).__name__)
        return Response(
            {"detail": "Conflicts with an existing object (a name or version already taken)."},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, DataError):
        log.info("management API: data error %s", type(exc).__name__)
        return Response({"detail": "A value is out of range."}, status=status.HTTP_400_BAD_REQUEST)
    return None
