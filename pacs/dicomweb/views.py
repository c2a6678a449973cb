"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, WADO-URI and STOW-RS over the archive.

Each view translates HTTP (path, query, Accept, body) into a call of ``qido``, the ``wado``
service or the ``stow`` service and writes the answer; errors of the one ServiceError hierarchy
become 4xx answers with a message.
"""

from __future__ import annotations

import orjson
from django.conf import settings
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from core.errors import (
    BadRequest,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from dicomnet import transcode
from pacs.dicomweb import multipart, qido
from pacs.dicomweb.auth import (
    ApiTokenAuthentication,
    PortalSessionAuthentication,
    RolePermission,
)
from pacs.dicomweb.negotiation import MediaType, accept_of, choose, parse_media_type
from pacs.dicomweb.xml import dataset_json, dataset_xml
from pacs.rendering import NotRenderable, Window
from pacs.services import stow, wado

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
DICOM = "application/dicom"
MULTIPART = "multipart/related"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


class _AnyContent(BaseContentNegotiation):
    """DICOMweb views negotiate themselves (types with parameters DRF does not model); DRF's
    renderer only writes error bodies."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DicomWebView(APIView):
    # token first: an anonymous request gets 401 with WWW-Authenticate, not 403
    authentication_classes = [ApiTokenAuthentication, PortalSessionAuthentication]
    permission_classes = [RolePermission]
    # the core.roles action each method needs; a method not listed needs an admin
    actions: dict[str, str] = {"GET": "archive.view", "HEAD": "archive.view",
                               "POST": "archive.store"}
    content_negotiation_class = _AnyContent
    renderer_classes = [JSONRenderer]
    parser_classes: list = []  # bodies are read raw (STOW-RS)

    def handle_exception(self, exc):
        if isinstance(exc, NotRenderable):
            return _error(NotAcceptable(str(exc)))
        if isinstance(exc, ServiceError):
            return _error(exc)
        return super().handle_exception(exc)

    def action_for(self, method: str) -> str:
        return self.actions.get(method, "admin")

    def base_url(self) -> str:
        """Where links in answers point: PORTAL_DICOMWEB_BASE_URL when set (a proxy that
        rewrites paths), else this request's scheme, host and port, which a trusted proxy's
        X-Forwarded-Proto/Host/Port replace in proxy mode (`serve` tells waitress to)."""
        return settings.DICOMWEB_BASE_URL or self.request.build_absolute_uri("/dicomweb")

    def location(self) -> str:
        """This resource's URL under ``base_url`` (a Content-Location)."""
        path = self.request.path
        return self.base_url().rstrip("/") + path[path.index("/dicomweb") + len("/dicomweb"):]


def _error(exc: ServiceError) -> HttpResponse:
    return HttpResponse(orjson.dumps({"error": str(exc)}), status=exc.http_status,
                        content_type="application/json")


@csrf_exempt  # it changes nothing, and a POST must get this answer, not a CSRF refusal
def unknown_resource(request) -> HttpResponse:
    """Any path under /dicomweb that names no resource: a 404 that says why, in JSON like
    every other DICOMweb error, not the site's HTML page (PS3.18 8.6: the body describes the
    error). Nothing of the archive is read, so it needs no login."""
    return _error(NotFound(
        f"no DICOMweb resource at {request.path}: study, series and instance UIDs are digits "
        "and dots (PS3.5 9.1), and the resources are those of PS3.18 10.4-10.6 and 11"))


# --- QIDO-RS ---------------------------------------------------------------------------------

QIDO_PARAMETERS = [
    OpenApiParameter("limit", int, description="at most this many results"),
    OpenApiParameter("offset", int, description="skip this many results (stable order)"),
    OpenApiParameter("includefield", str, many=True,
                     description="extra attributes (keyword or tag), or 'all'"),
    OpenApiParameter("fuzzymatching", bool, description="fuzzy person-name matching"),
]


class QidoView(DicomWebView):
    level = "STUDY"
    defaults: tuple[str, ...] = ()

    @extend_schema(parameters=QIDO_PARAMETERS, summary="QIDO-RS search",
                   description="Matching keys as keyword=value or tag=value (PS3.18 8.3.4).",
                   responses={(200, DICOM_JSON): dict})
    def get(self, request, **scope: str):
        media, _ = choose(accept_of(request), [DICOM_JSON, "application/json", MULTIPART])
        if media.type == MULTIPART and media.param("type", DICOM_XML) != DICOM_XML:
            raise NotAcceptable("QIDO-RS answers as application/dicom+json or "
                                'multipart/related; type="application/dicom+xml"')
        search = qido.parse(request.GET, _scope_keys(scope))
        result = qido.search(self.level, search, defaults=self.defaults,
                             base_url=self.base_url())
        if media.type == MULTIPART or media.type == DICOM_XML:
            boundary = multipart.new_boundary()
            body = b"".join(multipart.stream(boundary, (
                (multipart.part_header(boundary, DICOM_XML), [dataset_xml(ds)])
                for ds in result.datasets)))
            response = HttpResponse(body, content_type=multipart.content_type(boundary,
                                                                              DICOM_XML))
        else:
            response = HttpResponse(orjson.dumps(result.datasets), content_type=DICOM_JSON)
        warnings = []
        if result.truncated:
            warnings.append('299 portal: "The number of results exceeded the maximum '
                            'supported by the server. Additional results can be requested."')
        if result.unmatched:  # those keys were ignored: the answer may be wider
            warnings.append('299 portal: "The following attributes are not supported for '
                            f'matching: {", ".join(result.unmatched)}"')
        if warnings:
            response["Warning"] = ", ".join(warnings)
        return response


def _scope_keys(scope: dict[str, str]) -> dict[str, str]:
    names = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}
    return {names[k]: v for k, v in scope.items() if k in names}


class StudiesView(QidoView):
    level, defaults = "STUDY", qido.STUDY_DEFAULTS

    @extend_schema(summary="STOW-RS store instances",
                   request={"multipart/related": bytes}, responses={(200, DICOM_JSON): dict})
    def post(self, request, study: str | None = None):
        return _store(self, request, study)


class StudySeriesView(QidoView):
    level, defaults = "SERIES", qido.SERIES_DEFAULTS


class AllSeriesView(QidoView):
    level, defaults = "SERIES", qido.STUDY_DEFAULTS + qido.SERIES_DEFAULTS


class SeriesInstancesView(QidoView):
    level, defaults = "IMAGE", qido.INSTANCE_DEFAULTS


class StudyInstancesView(QidoView):
    level, defaults = "IMAGE", qido.SERIES_DEFAULTS + qido.INSTANCE_DEFAULTS


class AllInstancesView(QidoView):
    level = "IMAGE"
    defaults = qido.STUDY_DEFAULTS + qido.SERIES_DEFAULTS + qido.INSTANCE_DEFAULTS


# --- STOW-RS ---------------------------------------------------------------------------------

def _store(view: DicomWebView, request, study: str | None) -> HttpResponse:
    media, _ = choose(accept_of(request), [DICOM_JSON, "application/json", DICOM_XML])
    content_type = request.META.get("CONTENT_TYPE", "")
    body_type = parse_media_type(content_type)
    if body_type.type != MULTIPART:
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom" (or '
            '"application/dicom+json" or "application/dicom+xml" with bulk data parts)')
    part_type = body_type.param("type", DICOM)
    if part_type not in (DICOM, DICOM_JSON, DICOM_XML):
        raise UnsupportedMediaType(f"multipart/related of type {part_type!r} is not supported")
    boundary = multipart.boundary_of(content_type)
    if int(request.META.get("CONTENT_LENGTH") or 0) > settings.UPLOAD_MAX_BYTES:
        raise PayloadTooLarge(f"the body is larger than {settings.UPLOAD_MAX_BYTES} bytes "
                              "(PORTAL_UPLOAD_MAX_BYTES)")
    # read part by part: each instance is stored before the next is read
    parts = (_stow_part(part) for part in multipart.iter_parts(request.read, boundary))
    if part_type == DICOM_XML:
        parts = iter(_xml_as_json(list(parts)))
    result = stow.store_parts(parts, study_uid=study, origin=f"stow:{request.user}")
    stow.record(result, actor=str(request.user), source=request.META.get("REMOTE_ADDR", ""))
    answer = result.response(view.base_url(), study)
    # PS3.18 10.5.3: 202 when an instance was stored with a warning (and none failed)
    status = 409 if result.failed else 202 if any(o.warning for o in result.stored) else 200
    if media.type == DICOM_XML:
        response = HttpResponse(dataset_xml(answer), status=status, content_type=DICOM_XML)
    else:
        response = HttpResponse(orjson.dumps(answer), status=status, content_type=DICOM_JSON)
    # the reasons, in words, for the failures the response lists by code (PS3.18 8.4.3)
    reasons = [f"{o.sop_instance_uid or 'part'}: {o.comment}"
               for o in (*result.failed, *(o for o in result.stored if o.warning))][:10]
    if reasons:
        response["Warning"] = ", ".join(
            '299 portal: "{}"'.format(r.replace('"', "'").replace("\n", " ")) for r in reasons)
    return response


def _xml_as_json(parts: list[stow.StowPart]) -> list[stow.StowPart]:
    """XML metadata (PS3.19 A.1, one NativeDicomModel per instance part) as the one DICOM
    JSON part the JSON form of the request has, followed by the bulk data parts."""
    metadata = [p for p in parts if p.media_type == DICOM_XML]
    if not metadata:
        raise BadRequest("no application/dicom+xml part in a request of that type")
    datasets = [dataset_json(p.body) for p in metadata]
    return [stow.StowPart(DICOM_JSON, orjson.dumps(datasets)),
            *(p for p in parts if p.media_type != DICOM_XML)]


def _stow_part(part: multipart.Part) -> stow.StowPart:
    media = parse_media_type(part.content_type)
    return stow.StowPart(media.type, part.body, part.location, media.param("transfer-syntax"))


# --- WADO-RS ---------------------------------------------------------------------------------

def _acceptable_syntaxes(accepted: list[MediaType], single: bool) -> tuple[list[str], bool]:
    """Transfer syntaxes the client takes for application/dicom, in order ("*" = as stored),
    and whether it wants a bare application/dicom body (one instance, no multipart)."""
    syntaxes: list[str] = []
    bare = False
    for media in accepted:
        if media.type == MULTIPART and media.param("type", DICOM) in (DICOM, "*/*", "*"):
            syntaxes.append(media.param("transfer-syntax") or EXPLICIT_LE)
        elif media.type == DICOM and single:
            syntaxes.append(media.param("transfer-syntax") or EXPLICIT_LE)
            bare = bare or len(syntaxes) == 1
        elif media.type in ("*/*", "multipart/*", "*"):
            syntaxes += [EXPLICIT_LE, "*"]
    if not syntaxes:
        raise NotAcceptable('WADO-RS sends multipart/related; type="application/dicom"')
    return syntaxes, bare


class RetrieveView(DicomWebView):
    @extend_schema(summary="WADO-RS retrieve study, series or instance",
                   responses={(200, MULTIPART): bytes})
    def get(self, request, study: str, series: str | None = None, instance: str | None = None):
        syntaxes, bare = _acceptable_syntaxes(accept_of(request), single=bool(instance))
        items = wado.instances(study, series, instance)
        targets = [wado.choose_syntax(item, syntaxes) for item in items]
        if bare:
            bare_type = f"{DICOM}; transfer-syntax={targets[0]}"
            if targets[0] == items[0].transfer_syntax_uid:
                return _as_stored(request, [(items[0].file_key, items[0].file_size)], bare_type)
            data = b"".join(wado.part10(items[0], targets[0]))
            return HttpResponse(data, content_type=bare_type)
        boundary = multipart.new_boundary()
        headers = [multipart.part_header(boundary, f"{DICOM}; transfer-syntax={ts}")
                   for ts in targets]
        content_type = multipart.content_type(boundary, DICOM)
        if all(ts == item.transfer_syntax_uid for item, ts in zip(items, targets, strict=True)):
            # all as stored: one joined file of known length, sent by the server's I/O thread
            segments: list = []
            for header, item in zip(headers, items, strict=True):
                segments += [header, (item.file_key, item.file_size), multipart.CRLF]
            segments.append(multipart.closing(boundary))
            return _as_stored(request, segments, content_type)
        parts = ((header, wado.part10(item, ts))
                 for header, item, ts in zip(headers, items, targets, strict=True))
        if len(items) == 1:  # converted before the answer starts: an error is still a 406
            parts = iter([(headers[0], [b"".join(wado.part10(items[0], targets[0]))])])
        return StreamingHttpResponse(multipart.stream(boundary, parts), content_type=content_type)


def _as_stored(request, segments: list, content_type: str) -> HttpResponse:
    """Stored files (and multipart headers) as one body of known length, or the one byte range
    the request asks for (206; 416 when it lies outside). A resumed download of a large object
    reads only the rest of it from storage."""
    body = multipart.JoinedFile(segments, wado.range_reader())
    size = body.seek(0, 2)
    body.seek(0)
    asked = request.headers.get("Range", "")
    try:
        window = multipart.byte_range(asked, size) if asked else None
    except ValueError as exc:
        body.close()
        response = HttpResponse(f"Range {asked!r}: {exc}", status=416,
                                content_type="text/plain")
        response["Content-Range"] = f"bytes */{size}"
        return response
    if window is None:
        response = FileResponse(body, content_type=content_type)
    else:
        start, length = window
        response = FileResponse(multipart.Window(body, start, length), status=206,
                                content_type=content_type)
        response["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    response["Accept-Ranges"] = "bytes"
    return response


class StudyView(RetrieveView):
    """GET retrieves the study (WADO-RS), POST stores into it (STOW-RS)."""

    @extend_schema(summary="STOW-RS store instances into a study",
                   request={"multipart/related": bytes}, responses={(200, DICOM_JSON): dict})
    def post(self, request, study: str):
        return _store(self, request, study)


class MetadataView(DicomWebView):
    @extend_schema(summary="WADO-RS metadata (DICOM JSON)", responses={(200, DICOM_JSON): dict})
    def get(self, request, study: str, series: str | None = None, instance: str | None = None):
        media, _ = choose(accept_of(request), [DICOM_JSON, "application/json", MULTIPART])
        body = wado.metadata_json(study, series, instance, self.base_url())
        if media.type == MULTIPART:
            if media.param("type", DICOM_XML) != DICOM_XML:
                raise NotAcceptable("metadata is application/dicom+json or "
                                    'multipart/related; type="application/dicom+xml"')
            boundary = multipart.new_boundary()
            data = b"".join(multipart.stream(boundary, (
                (multipart.part_header(boundary, DICOM_XML), [dataset_xml(ds)])
                for ds in orjson.loads(body))))
            return HttpResponse(data, content_type=multipart.content_type(boundary, DICOM_XML))
        return HttpResponse(body, content_type=DICOM_JSON)


def _pixel_choice(accepted: list[MediaType], item: wado.StoredInstance) -> tuple[bool, bool]:
    """(as stored, multipart): whether the client takes the frames as stored or wants them
    uncompressed as application/octet-stream, and whether in a multipart/related body or as
    a single part (OHIF's ``singlepart`` option asks bulk data that way)."""
    stored = wado.frame_media_type(item)
    for media in accepted:
        is_multipart = media.type == MULTIPART
        want = media.param("type", wado.OCTET) if is_multipart else media.type
        if media.type in ("*/*", "*"):
            # no preference (or no Accept header): the default of PS3.18 for pixel data is
            # uncompressed application/octet-stream in a multipart body, where it can be
            # decoded here; as stored otherwise
            return not transcode.can_decompress(item.transfer_syntax_uid), True
        if want in ("*/*", "*", "multipart/*"):
            return True, True
        if want == stored:
            return True, is_multipart
        if want == wado.OCTET:
            return False, is_multipart
    raise NotAcceptable(f"the frames are {stored} (as stored) or application/octet-stream "
                        "(uncompressed); ask for multipart/related with one of these types")


def _parts_response(parts: list[tuple[str, bytes]], location: str, *, single: bool = False
                    ) -> HttpResponse:
    if single:
        if len(parts) != 1:
            raise NotAcceptable("more than one part: ask for multipart/related")
        media, data = parts[0]
        response = HttpResponse(data, content_type=media)
        response["Content-Location"] = location
        return response
    boundary = multipart.new_boundary()
    main_type = parts[0][0].split(";")[0] if parts else wado.OCTET
    body = b"".join(multipart.stream(boundary, (
        (multipart.part_header(boundary, media, location=location), [data])
        for media, data in parts)))
    return HttpResponse(body, content_type=multipart.content_type(boundary, main_type))


def _frame_type(item: wado.StoredInstance, as_stored: bool) -> str:
    if as_stored and wado.frame_media_type(item) != wado.OCTET:
        return f"{wado.frame_media_type(item)}; transfer-syntax={item.transfer_syntax_uid}"
    return f"{wado.OCTET}; transfer-syntax={EXPLICIT_LE}"


class FramesView(DicomWebView):
    @extend_schema(summary="WADO-RS frames", responses={(200, MULTIPART): bytes})
    def get(self, request, study: str, series: str, instance: str, frames: str):
        numbers = wado.parse_frame_list(frames)
        item = wado.instances(study, series, instance)[0]
        as_stored, is_multipart = _pixel_choice(accept_of(request), item)
        data = wado.frames(item, numbers, as_stored=as_stored)
        media = _frame_type(item, as_stored)
        return _parts_response([(media, d) for d in data], self.location(),
                               single=not is_multipart)


class BulkDataView(DicomWebView):
    @extend_schema(summary="WADO-RS bulk data", responses={(200, MULTIPART): bytes})
    def get(self, request, study: str, series: str, instance: str, tag: str):
        item = wado.instances(study, series, instance)[0]
        location = self.location()
        if tag.upper() == "7FE00010" and item.has_pixel_data:
            as_stored, is_multipart = _pixel_choice(accept_of(request), item)
            count = item.number_of_frames or 1
            data = wado.frames(item, list(range(1, count + 1)), as_stored=as_stored)
            if not as_stored or wado.frame_media_type(item) == wado.OCTET:
                data = [b"".join(data)]
            media = _frame_type(item, as_stored)
            return _parts_response([(media, d) for d in data], location,
                                   single=not is_multipart)
        parts = wado.bulkdata(item, tag)
        own = parts[0][0]  # an encapsulated document's own type, else octet-stream
        kinds = list(dict.fromkeys((own, wado.OCTET)))
        media, chosen = choose(accept_of(request), [MULTIPART, *kinds])
        in_multipart = chosen == MULTIPART
        if in_multipart:
            wanted = media.param("type") or own
            chosen = own if wanted in ("*/*", "*") else wanted
            if chosen not in kinds:
                raise NotAcceptable(f"this bulk data is {' or '.join(kinds)}, not {wanted}")
        return _parts_response([(chosen, data) for _, data in parts], location,
                               single=not in_multipart)


# --- rendered and thumbnails -----------------------------------------------------------------

RENDERED_TYPES = ["image/jpeg", "image/png", "image/gif"]


def _window(params) -> Window | None:
    text = params.get("window")
    if not text:
        return None
    pieces = [p.strip() for p in text.split(",")]
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except (ValueError, IndexError) as exc:
        raise BadRequest("window is center,width[,function]") from exc
    function = pieces[2].upper().replace("-", "_") if len(pieces) > 2 and pieces[2] \
        else "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise BadRequest("window function is linear, linear-exact or sigmoid")
    return Window(center, width, function)


def _viewport(params, default: int | None) -> int | None:
    text = params.get("viewport")
    if not text:
        return default
    try:
        return max(int(v) for v in text.split(",")[:2] if v.strip())
    except ValueError as exc:
        raise BadRequest("viewport is width,height") from exc


def _int_param(params, name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number") from exc


class RenderedView(DicomWebView):
    thumbnail = False

    @extend_schema(summary="WADO-RS rendered image / thumbnail",
                   responses={(200, "image/jpeg"): bytes})
    def get(self, request, study: str, series: str | None = None,
            instance: str | None = None, frames: str | None = None):
        items = wado.instances(study, series, instance)
        accepted = accept_of(request)
        if not self.thumbnail and instance is None:
            media, chosen = choose(accepted, [MULTIPART, *RENDERED_TYPES])
            if chosen == MULTIPART:
                return self._every_instance(items, media.param("type") or "image/jpeg")
        item = wado.representative(items)  # a thumbnail, or one image asked for
        document = wado.document(item) if not item.has_pixel_data else None
        if document is not None:  # its rendered form is the document (PS3.18 8.7.4)
            media_type, data = document
            choose(accepted, [media_type])
            return self._cached(HttpResponse(data, content_type=media_type))
        _, media = choose(accepted, RENDERED_TYPES)
        frame = wado.parse_frame_list(frames)[0] if frames else 1
        return self._cached(HttpResponse(self._render(item, media, frame), content_type=media))

    def _render(self, item: wado.StoredInstance, media: str, frame: int = 1) -> bytes:
        params = self.request.GET
        return wado.rendered(
            item, frame=frame, media_type=media, window=_window(params),
            size=_viewport(params, 128 if self.thumbnail else None),
            quality=_int_param(params, "quality", 90))

    def _every_instance(self, items: list[wado.StoredInstance], wanted: str
                        ) -> StreamingHttpResponse:
        """Study and series /rendered (PS3.18 10.4.1.1.3): every instance rendered, one part
        each, made as the body is sent. Images in the image type asked for, encapsulated
        documents as themselves; objects with neither (SR, plans) have no rendered form and
        are left out."""
        if wanted not in RENDERED_TYPES and wanted not in ("*/*", "*"):
            raise NotAcceptable(f"study and series are rendered as {', '.join(RENDERED_TYPES)}")
        image_type = wanted if wanted in RENDERED_TYPES else RENDERED_TYPES[0]
        _window(self.request.GET)  # a bad parameter is a 400 before the body starts
        _viewport(self.request.GET, None)
        _int_param(self.request.GET, "quality", 90)
        base = self.base_url().rstrip("/")
        boundary = multipart.new_boundary()

        def parts():
            for item in items:
                url = (f"{base}/studies/{item.study_uid}/series/{item.series_uid}"
                       f"/instances/{item.sop_instance_uid}/rendered")
                if item.has_pixel_data:
                    try:
                        data, media = self._render(item, image_type), image_type
                    except (ServiceError, NotRenderable):
                        continue  # pixel data that cannot be decoded: no rendered form
                else:
                    document = wado.document(item)
                    if document is None or wanted not in ("*/*", "*", document[0]):
                        continue
                    media, data = document
                yield multipart.part_header(boundary, media, location=url), [data]

        response = StreamingHttpResponse(multipart.stream(boundary, parts()),
                                         content_type=multipart.content_type(boundary, image_type))
        return self._cached(response)

    @staticmethod
    def _cached(response):
        response["Cache-Control"] = "private, max-age=3600"
        return response


class ThumbnailView(RenderedView):
    thumbnail = True


# --- WADO-URI --------------------------------------------------------------------------------

class WadoUriView(DicomWebView):
    """WADO-URI (PS3.18 9): one object by its UIDs, as application/dicom or a rendered
    image (image/jpeg is the default for images)."""

    @extend_schema(summary="WADO-URI", parameters=[
        OpenApiParameter("requestType", str, required=True), OpenApiParameter("studyUID", str),
        OpenApiParameter("seriesUID", str), OpenApiParameter("objectUID", str),
        OpenApiParameter("contentType", str), OpenApiParameter("transferSyntax", str),
        OpenApiParameter("frameNumber", int), OpenApiParameter("windowCenter", float),
        OpenApiParameter("windowWidth", float), OpenApiParameter("rows", int),
        OpenApiParameter("columns", int)], responses={(200, DICOM): bytes})
    def get(self, request):
        params = request.GET
        if params.get("requestType") != "WADO":
            raise BadRequest("requestType=WADO is required")
        uids = [params.get(name, "").strip() for name in ("studyUID", "seriesUID", "objectUID")]
        if not all(uids):
            raise BadRequest("studyUID, seriesUID and objectUID are required")
        item = wado.instances(*uids)[0]
        wanted = [t.strip() for t in params.get("contentType", "").split(",") if t.strip()]
        if not wanted:
            wanted = ["image/jpeg"] if item.has_pixel_data else [DICOM]
        media = next((t for t in wanted if t in (DICOM, *RENDERED_TYPES)), None)
        if media is None:
            raise NotAcceptable(f"contentType {', '.join(wanted)} is not supported; use "
                                "application/dicom, image/jpeg, image/png or image/gif")
        if media == DICOM:
            syntax = wado.choose_syntax(item, [params.get("transferSyntax") or "*"])
            if syntax == item.transfer_syntax_uid:
                return _as_stored(request, [(item.file_key, item.file_size)], DICOM)
            return StreamingHttpResponse(wado.part10(item, syntax), content_type=DICOM)
        window = None
        if params.get("windowCenter") and params.get("windowWidth"):
            window = _window({"window": f"{params['windowCenter']},{params['windowWidth']}"})
        size = max(_int_param(params, "rows", 0), _int_param(params, "columns", 0)) or None
        data = wado.rendered(item, frame=_int_param(params, "frameNumber", 1),
                             media_type=media, window=window, size=size,
                             quality=_int_param(params, "imageQuality", 90))
        return HttpResponse(data, content_type=media)

