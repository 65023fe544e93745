from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse

from fleet.access.restrict import has_permission, restrict
from fleet.core.errors import DomainError, ErrorKind

PAGE_SIZE = 50


def visible(request: HttpRequest, queryset: QuerySet, action: str = "view") -> QuerySet:
    return restrict(queryset, request.user, action)


def get_visible(request: HttpRequest, queryset: QuerySet, **lookup: Any) -> Any:
    """The object if the user may see it, else 404 (as the API does)."""
    obj = visible(request, queryset).filter(**lookup).first()
    if obj is None:
        raise Http404("Not found.")
    return obj


def require(request: HttpRequest, model: type[Model], action: str, obj: Model | None = None) -> None:
    """403 unless the user may do `action` (on `obj`, or anywhere)."""
    if not has_permission(request.user, model, action, obj):
        raise PermissionDenied(f"You may not {action} this {model._meta.verbose_name}.")


def paginate(request: HttpRequest, queryset: QuerySet) -> Any:
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def refused(request: HttpRequest, exc: DomainError, back: HttpResponse) -> HttpResponse:
    """The one mapping of a domain error's kind in the UI: forbidden is a 403 with the message; a conflict or
    an invalid request is shown as an error message on the page ``back`` returns to."""
    if exc.kind is ErrorKind.FORBIDDEN:
        return HttpResponse(exc.message, status=403)
    messages.error(request, exc.message)
    return back
