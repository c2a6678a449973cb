"""DICOMweb routes under /dicomweb (the base URL a viewer or dicomweb-client is given)."""

from django.urls import path, register_converter

from pacs.dicomweb import views


class UidConverter:
    regex = r"[0-9]+(?:\.[0-9]+)*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(UidConverter, "uid")

S = "studies/<uid:study>"
SE = f"{S}/series/<uid:series>"
I = f"{SE}/instances/<uid:instance>"  # noqa: E741

urlpatterns = [
    path("studies", views.StudiesView.as_view(), name="dicomweb-studies"),
    path("series", views.AllSeriesView.as_view()),
    path("instances", views.AllInstancesView.as_view()),
    path(S, views.StudyView.as_view(), name="dicomweb-study"),
    path(f"{S}/metadata", views.MetadataView.as_view()),
    path(f"{S}/rendered", views.RenderedView.as_view()),
    path(f"{S}/thumbnail", views.ThumbnailView.as_view()),
    path(f"{S}/series", views.StudySeriesView.as_view()),
    path(f"{S}/instances", views.StudyInstancesView.as_view()),
    path(SE, views.RetrieveView.as_view()),
    path(f"{SE}/metadata", views.MetadataView.as_view()),
    path(f"{SE}/rendered", views.RenderedView.as_view()),
    path(f"{SE}/thumbnail", views.ThumbnailView.as_view()),
    path(f"{SE}/instances", views.SeriesInstancesView.as_view()),
    path(I, views.RetrieveView.as_view()),
    path(f"{I}/metadata", views.MetadataView.as_view()),
    path(f"{I}/rendered", views.RenderedView.as_view()),
    path(f"{I}/thumbnail", views.ThumbnailView.as_view()),
    path(f"{I}/frames/<str:frames>", views.FramesView.as_view()),
    path(f"{I}/frames/<str:frames>/rendered", views.RenderedView.as_view()),
    path(f"{I}/frames/<str:frames>/thumbnail", views.ThumbnailView.as_view()),
    path(f"{I}/bulkdata/<path:tag>", views.BulkDataView.as_view()),  # tag or tag/item/tag
    path("wado", views.WadoUriView.as_view(), name="wado-uri"),
]
