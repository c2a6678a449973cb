from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from pacs import views as pacs_views
from portal import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("audit/", views.audit_list, name="audit"),
    path("studies/", pacs_views.study_list, name="study-list"),
    path("studies/<str:study_uid>/", pacs_views.study_detail, name="study-detail"),
    path("series/<str:series_uid>/", pacs_views.series_detail, name="series-detail"),
    path("instances/<str:sop_uid>/preview.png", pacs_views.instance_preview,
         name="instance-preview"),
    path("instances/<str:sop_uid>/file", pacs_views.instance_file, name="instance-file"),
    path("aes/", pacs_views.ae_list, name="ae-list"),
    path("aes/new/", pacs_views.ae_edit, name="ae-new"),
    path("aes/<int:pk>/edit/", pacs_views.ae_edit, name="ae-edit"),
    path("aes/<int:pk>/delete/", pacs_views.ae_delete, name="ae-delete"),
    path("aes/<int:pk>/echo/", pacs_views.ae_echo, name="ae-echo"),
    path("django-admin/", admin.site.urls),
]
