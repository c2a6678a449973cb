from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from hl7gw import views as hl7_views
from pacs import transfer_views
from pacs import views as pacs_views
from pacs.dicomweb import views as pacs_dicomweb_views
from pacs.dicomweb.auth import ApiTokenAuthentication, PortalSessionAuthentication
from portal import operations, views
from worklist import upsrs
from worklist import views as worklist_views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("health/live", operations.live, name="health-live"),
    path("health/ready", operations.ready, name="health-ready"),
    path("metrics", operations.MetricsView.as_view(), name="metrics"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChange.as_view(), name="password_change"),
    path("audit/", views.audit_list, name="audit"),
    path("studies/", pacs_views.study_list, name="study-list"),
    path("studies/<str:study_uid>/", pacs_views.study_detail, name="study-detail"),
    path("studies/<str:study_uid>/delete/", pacs_views.study_delete, name="study-delete"),
    path("series/<str:series_uid>/", pacs_views.series_detail, name="series-detail"),
    path("series/<str:series_uid>/delete/", pacs_views.series_delete, name="series-delete"),
    path("instances/<str:sop_uid>/preview.png", pacs_views.instance_preview,
         name="instance-preview"),
    path("instances/<str:sop_uid>/file", pacs_views.instance_file, name="instance-file"),
    path("instances/<str:sop_uid>/delete/", pacs_views.instance_delete, name="instance-delete"),
    path("aes/", pacs_views.ae_list, name="ae-list"),
    path("aes/new/", pacs_views.ae_edit, name="ae-new"),
    path("aes/<int:pk>/edit/", pacs_views.ae_edit, name="ae-edit"),
    path("aes/<int:pk>/delete/", pacs_views.ae_delete, name="ae-delete"),
    path("aes/<int:pk>/echo/", pacs_views.ae_echo, name="ae-echo"),
    path("forwarding/", pacs_views.forwarding_rules, name="forwarding"),
    path("forwarding/<int:pk>/", pacs_views.forwarding_rules, name="forwarding-edit"),
    path("forwarding/<int:pk>/delete/", pacs_views.forwarding_delete, name="forwarding-delete"),
    path("forwarding/retry/<int:ae_pk>/", pacs_views.forwarding_retry, name="forwarding-retry"),
    path("jobs/", transfer_views.job_list, name="job-list"),
    path("jobs/<int:pk>/", transfer_views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/progress/", transfer_views.job_progress, name="job-progress"),
    path("jobs/<int:pk>/cancel/", transfer_views.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/retry/", transfer_views.job_retry, name="job-retry"),
    path("send/<str:level>/<str:uid>/", transfer_views.send, name="send"),
    path("remote/", transfer_views.remote_search, name="remote-search"),
    path("remote/<int:ae_pk>/studies/<str:study_uid>/", transfer_views.remote_study,
         name="remote-study"),
    path("remote/<int:ae_pk>/retrieve/", transfer_views.remote_retrieve,
         name="remote-retrieve"),
    path("worklist/", worklist_views.board, name="worklist-board"),
    path("worklist/orders/new/", worklist_views.order_new, name="order-new"),
    path("worklist/orders/<int:pk>/", worklist_views.order_detail, name="order-detail"),
    path("worklist/orders/<int:pk>/cancel/", worklist_views.order_cancel, name="order-cancel"),
    path("worklist/orders/<int:pk>/edit/", worklist_views.order_edit, name="order-edit"),
    path("worklist/orders/<int:pk>/explain/", worklist_views.order_explain,
         name="order-explain"),
    path("worklist/queries/", worklist_views.worklist_queries, name="worklist-queries"),
    path("worklist/steps/<int:pk>/status/", worklist_views.step_status, name="step-status"),
    path("worklist/steps/<int:pk>/reschedule/", worklist_views.step_reschedule,
         name="step-reschedule"),
    path("worklist/workitems/", worklist_views.workitem_list, name="workitem-list"),
    path("worklist/workitems/<str:uid>/", worklist_views.workitem_detail, name="workitem-detail"),
    path("worklist/subscriptions/", worklist_views.subscriptions, name="ups-subscriptions"),
    path("worklist/subscriptions/<path:ae_title>/retry/", worklist_views.subscriber_retry,
         name="ups-subscriber-retry"),
    path("reconciliation/", worklist_views.reconciliation, name="reconciliation"),
    path("reconciliation/<int:pk>/resolve/", worklist_views.discrepancy_resolve,
         name="discrepancy-resolve"),
    path("reconciliation/mpps/<int:pk>/link/", worklist_views.mpps_link, name="mpps-link"),
    path("reconciliation/studies/<str:study_uid>/link/", worklist_views.study_link,
         name="study-link"),
    path("worklist/stations/", worklist_views.stations, name="stations"),
    path("worklist/stations/<int:pk>/", worklist_views.stations, name="stations-edit"),
    path("worklist/catalog/", worklist_views.catalog, name="catalog"),
    path("worklist/catalog/<int:pk>/", worklist_views.catalog, name="catalog-edit"),
    path("hl7/", hl7_views.message_list, name="hl7-messages"),
    path("hl7/<int:pk>/", hl7_views.message_detail, name="hl7-message"),
    path("hl7/<int:pk>/replay/", hl7_views.message_replay, name="hl7-replay"),
    path("hl7/<int:pk>/resend/", hl7_views.message_resend, name="hl7-resend"),
    path("hl7/senders/", hl7_views.senders, name="hl7-senders"),
    path("hl7/senders/<int:pk>/", hl7_views.senders, name="hl7-sender-edit"),
    path("hl7/receivers/", hl7_views.receivers, name="hl7-receivers"),
    path("hl7/receivers/<int:pk>/", hl7_views.receivers, name="hl7-receiver-edit"),
    path("hl7/outbound/", hl7_views.outbound_list, name="hl7-outbound"),
    path("hl7/outbound/<int:pk>/retry/", hl7_views.outbound_retry, name="hl7-outbound-retry"),
    path("dicomweb/", include("pacs.dicomweb.urls")),
    path("dicomweb/workitems", upsrs.WorkitemsView.as_view()),
    path("dicomweb/workitems/<uid:workitem>", upsrs.WorkitemView.as_view()),
    path("dicomweb/workitems/<uid:workitem>/state", upsrs.WorkitemStateView.as_view()),
    path("dicomweb/workitems/<uid:workitem>/cancelrequest", upsrs.CancelRequestView.as_view()),
    path("dicomweb/workitems/<uid:workitem>/subscribers/<str:aetitle>",
         upsrs.SubscriptionView.as_view()),
    path("dicomweb/workitems/<uid:workitem>/subscribers/<str:aetitle>/suspend",
         upsrs.SuspendView.as_view()),
    # below every DICOMweb and UPS-RS route: any other path there gets a DICOMweb error
    re_path(r"^dicomweb/", pacs_dicomweb_views.unknown_resource),
    # WADO-URI is also reached at /wado, where older clients look for it
    path("wado", pacs_dicomweb_views.WadoUriView.as_view()),
    # the API description is for the portal's users, not for anyone on the network
    path("api/schema/", SpectacularAPIView.as_view(
        authentication_classes=[ApiTokenAuthentication, PortalSessionAuthentication],
        permission_classes=[IsAuthenticated]), name="api-schema"),
    path("api/token/", views.api_token, name="api-token"),
    path("django-admin/", admin.site.urls),
]
