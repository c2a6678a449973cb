"""UPS-RS (PS3.18 11): workitems over HTTP, on the worklist's steps (``worklist.ups``).

Create, Retrieve, Search and Update Workitem, Change Workitem State, Request Cancellation, and
(Un)Subscribe / Suspend Global Subscription; the events go out on the WebSocket event channel
(``worklist.consumers``).
"""

from __future__ import annotations

import orjson
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema

from core.errors import BadRequest, UnsupportedMediaType
from pacs.dicomweb import qido
from pacs.dicomweb.negotiation import accept_of, choose, parse_media_type
from pacs.dicomweb.views import DICOM_JSON, DicomWebView
from worklist import ups_events
from worklist.ups import changes, lookup, rendering, states, tags


def _warning(text: str) -> str:
    return '299 portal: "{}"'.format(text.replace('"', "'"))


class UpsView(DicomWebView):
    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        if isinstance(exc, states.UpsError):
            response["Warning"] = _warning(f"{exc} (0x{exc.dimse_status:04X})")
        return response


class WorkitemsView(UpsView):
    actions = {"GET": "worklist.view", "HEAD": "worklist.view", "POST": "worklist.schedule"}

    @extend_schema(summary="UPS-RS search workitems", responses={(200, DICOM_JSON): dict})
    def get(self, request):
        choose(accept_of(request), [DICOM_JSON, "application/json"])
        search = qido.parse(request.GET, {})
        qs = lookup.search(search.identifier, fuzzy=search.fuzzy)
        maximum = settings.QIDO_MAX_RESULTS
        wanted = min(search.limit, maximum) if search.limit is not None else maximum
        steps = list(qs[search.offset:search.offset + wanted + 1])
        response = HttpResponse(orjson.dumps([rendering.workitem_json(s) for s in steps[:wanted]]),
                                content_type=DICOM_JSON)
        if len(steps) > wanted and (search.limit is None or search.limit > maximum):
            response["Warning"] = _warning("The number of results exceeded the maximum "
                                           "supported by the server. Additional results can "
                                           "be requested.")
        return response

    @extend_schema(summary="UPS-RS create workitem", request={DICOM_JSON: dict},
                   responses={201: None})
    def post(self, request):
        # the workitem UID may come as the bare query string: POST /workitems?1.2.3
        step = changes.create(_dataset(request), uid=_bare_query(request, "workitem"),
                          actor=request.user.get_username())
        response = HttpResponse(status=201)
        response["Location"] = request.build_absolute_uri(
            f"/dicomweb/workitems/{step.ups_instance_uid}")
        return response


class WorkitemView(UpsView):
    actions = {"GET": "worklist.view", "HEAD": "worklist.view", "POST": "worklist.perform"}

    @extend_schema(summary="UPS-RS retrieve workitem", responses={(200, DICOM_JSON): dict})
    def get(self, request, workitem: str):
        choose(accept_of(request), [DICOM_JSON, "application/json"])
        step = states.get_workitem(workitem)
        return HttpResponse(orjson.dumps([rendering.workitem_json(step)]), content_type=DICOM_JSON)


    @extend_schema(summary="UPS-RS update workitem", request={DICOM_JSON: dict},
                   responses={200: None})
    def post(self, request, workitem: str):
        dataset = _dataset(request)
        transaction_uid = (_bare_query(request, "transaction")
                           or _text(dataset, tags.TRANSACTION_UID))
        result = changes.update(workitem, dataset, transaction_uid,
                            actor=request.user.get_username())
        response = HttpResponse(status=200)
        if result.ignored:
            response["Warning"] = _warning("attributes not kept by this server: "
                                           + ", ".join(result.ignored[:20]))
        return response


class CancelRequestView(UpsView):
    actions = {"POST": "worklist.schedule"}

    @extend_schema(summary="UPS-RS request cancellation", request={DICOM_JSON: dict},
                   responses={202: None})
    def post(self, request, workitem: str):
        dataset = _dataset(request) if request.body else {}
        changes.request_cancel(workitem, reason=_text(dataset, tags.REASON_FOR_CANCELLATION),
                           actor=request.user.get_username())
        return HttpResponse(status=202)


def _bare_query(request, name: str) -> str:
    """A UID given as ``?name=UID`` or as the bare query string ``?UID`` (PS3.18 11)."""
    query = request.META.get("QUERY_STRING", "")
    return request.GET.get(name, "") or (query if query and "=" not in query else "")


class WorkitemStateView(UpsView):
    actions = {"PUT": "worklist.perform"}

    @extend_schema(summary="UPS-RS change workitem state", request={DICOM_JSON: dict},
                   responses={200: None})
    def put(self, request, workitem: str):
        dataset = _dataset(request)
        state = _text(dataset, tags.PROCEDURE_STEP_STATE)
        if not state:
            raise BadRequest("Procedure Step State (0074,1000) is required")
        change = states.change_state(workitem, state, _text(dataset, tags.TRANSACTION_UID),
                                  actor=request.user.get_username())
        response = HttpResponse(status=200)
        if change.warning is not None:
            response["Warning"] = _warning(f"{change.warning_text} (0x{change.warning:04X})")
        return response


def _dataset(request) -> dict:
    media = parse_media_type(request.META.get("CONTENT_TYPE", ""))
    if media.type not in (DICOM_JSON, "application/json"):
        raise UnsupportedMediaType("the request body must be application/dicom+json")
    try:
        body = orjson.loads(request.body or b"null")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        raise BadRequest("the body must be one DICOM JSON dataset")
    return body


def _text(dataset: dict, tag: str) -> str:
    try:
        return str(dataset[tag]["Value"][0]).strip()
    except (KeyError, IndexError, TypeError):
        return ""


class SubscriptionView(UpsView):
    """Subscribe (POST) and Unsubscribe (DELETE) an AE title to a workitem, or to all of them
    with the well-known UIDs 1.2.840.10008.5.1.4.34.5 (global) and .5.1 (filtered global).
    Admins only: a subscription decides which AE title hears of which workitems."""

    actions = {"POST": "ups.subscribe", "DELETE": "ups.subscribe"}

    @extend_schema(summary="UPS-RS subscribe", responses={201: None})
    def post(self, request, workitem: str, aetitle: str):
        lock = request.GET.get("deletionlock", "false").strip().lower() == "true"
        filter_keys = {}
        for text in request.GET.getlist("filter"):
            for pair in text.split(","):
                key, sep, value = pair.partition("=")
                if not sep or not key.strip():
                    raise BadRequest("filter is a list of Keyword=value")
                filter_keys[key.strip()] = value.strip()
        ups_events.subscribe(workitem, aetitle, deletion_lock=lock, filter_keys=filter_keys,
                             actor=request.user.get_username())
        response = HttpResponse(status=201)
        response["Content-Location"] = request.build_absolute_uri(
            f"/dicomweb/subscribers/{aetitle}")
        return response

    @extend_schema(summary="UPS-RS unsubscribe", responses={200: None})
    def delete(self, request, workitem: str, aetitle: str):
        ups_events.unsubscribe(workitem, aetitle)
        return HttpResponse(status=200)


class SuspendView(UpsView):
    actions = {"POST": "ups.subscribe"}

    @extend_schema(summary="UPS-RS suspend global subscription", responses={200: None})
    def post(self, request, workitem: str, aetitle: str):
        if workitem not in (ups_events.GLOBAL, ups_events.GLOBAL_FILTERED):
            raise BadRequest("only a global subscription can be suspended")
        ups_events.suspend(aetitle)
        return HttpResponse(status=200)
