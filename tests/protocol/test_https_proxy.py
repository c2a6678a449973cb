"""HTTPS the way the user guide sets it up: nginx ends TLS in front of `serve` (the real
process, PORTAL_HTTPS=proxy), with a certificate authority made for the test. Over HTTPS the
portal answers with HSTS and Secure cookies; plain HTTP to `serve` itself is redirected; the UPS
event channel works as wss:// through the same proxy; DICOMweb links name the proxy's scheme,
host and port, which it tells in X-Forwarded-* headers (its Host header has no port)."""

from __future__ import annotations

import json
import re
import ssl
import subprocess

import pytest
import requests
from pydicom import dcmread
from websockets.sync.client import connect

from pacs.dicomweb import multipart
from tests.portal_process import start_portal
from tests.samples import free_port, sample
from tests.tls_pki import make_pki
from tests.waiting import wait_for_port

pytestmark = pytest.mark.interop

NGINX_CONF = """
user {user};
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  client_max_body_size 2g;
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name localhost;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location /dicomweb/subscribers/ {{
      proxy_pass http://127.0.0.1:{ws_port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host:$server_port;
      proxy_set_header X-Forwarded-Proto https;
    }}
    location / {{
      proxy_pass http://127.0.0.1:{http_port};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    import os

    work = tmp_path_factory.mktemp("https")
    pki = make_pki(work / "pki")
    port = free_port()
    portal = start_portal(work / "var", PORTAL_HTTPS="proxy",
                          DJANGO_SUPERUSER_USERNAME="chief",
                          DJANGO_SUPERUSER_PASSWORD="Xr4y-s3cret!",
                          DJANGO_CSRF_TRUSTED_ORIGINS=f"https://localhost:{port}")
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        user="root" if os.geteuid() == 0 else "nobody", dir=work, port=port,
        cert=pki.portal[1], key=pki.portal[0], ws_port=portal.ws_port,
        http_port=portal.http_port))
    nginx = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-g", "daemon off;"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_port(port, 15, host="localhost", alive=nginx)
    yield f"https://localhost:{port}", portal, pki
    nginx.terminate()
    nginx.wait(timeout=10)
    portal.stop()


def test_login_over_https_sets_secure_cookies_and_hsts(proxied):
    base, _portal, pki = proxied
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test's authority
    session.verify = str(pki.ca)
    page = session.get(f"{base}/login/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "secure" in page.headers["Set-Cookie"].lower()  # the CSRF cookie
    answer = session.post(f"{base}/login/", timeout=10, allow_redirects=False, data={
        "username": "chief", "password": "Xr4y-s3cret!",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]}, headers={"Referer": f"{base}/"})
    assert answer.status_code == 302, answer.text
    session_cookie = next(c for c in answer.raw.headers.getlist("Set-Cookie")
                          if c.startswith("sessionid="))
    assert re.search(r";\s*secure", session_cookie, re.I)
    assert re.search(r";\s*httponly", session_cookie, re.I)
    assert answer.headers["Location"] == "/"
    dashboard = session.get(f"{base}/", timeout=10)
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text


def test_plain_http_to_serve_is_sent_to_https(proxied):
    _base, portal, _pki = proxied
    answer = requests.get(f"{portal.url}/login/", timeout=10, allow_redirects=False)
    assert answer.status_code == 301
    assert answer.headers["Location"].startswith("https://")


def test_the_event_channel_through_the_proxy_is_wss(proxied):
    base, portal, pki = proxied
    key = portal.shell("from django.contrib.auth.models import User\n"
                       "from rest_framework.authtoken.models import Token\n"
                       "print(Token.objects.create(user=User.objects.get(username='chief')).key)"
                       ).split()[-1]
    auth = {"Authorization": f"Token {key}"}
    subscribed = requests.post(
        f"{base}/dicomweb/workitems/1.2.840.10008.5.1.4.34.5/subscribers/PROXIED",
        headers=auth, verify=str(pki.ca), timeout=10)
    assert subscribed.status_code == 201, subscribed.text
    context = ssl.create_default_context(cafile=str(pki.ca))
    uid = "1.2.826.0.1.3680043.10.1456.77.1"
    with connect(f"wss://{base.removeprefix('https://')}/dicomweb/subscribers/PROXIED",
                 ssl=context, additional_headers=auth, origin=base) as ws:
        created = requests.post(f"{base}/dicomweb/workitems?{uid}", verify=str(pki.ca),
                                timeout=10, headers={**auth,
                                                     "Content-Type": "application/dicom+json"},
                                json={"00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
                                      "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
                                      "00741204": {"vr": "LO", "Value": ["Proxy"]},
                                      "00404041": {"vr": "CS", "Value": ["READY"]},
                                      "00404005": {"vr": "DT", "Value": ["20261207120000"]},
                                      "00100020": {"vr": "LO", "Value": ["PROXY1"]}})
        assert created.status_code == 201, created.text
        assert created.headers["Location"].startswith(f"{base}/dicomweb/workitems/")
        event = json.loads(ws.recv(timeout=10))
        assert event["00001000"]["Value"] == [uid]


def test_dicomweb_links_name_the_proxy_host_and_port(proxied):
    base, portal, pki = proxied
    key = portal.shell("from django.contrib.auth.models import User\n"
                       "from rest_framework.authtoken.models import Token\n"
                       "print(Token.objects.get_or_create(user=User.objects.get("
                       "username='chief'))[0].key)").split()[-1]
    session = requests.Session()
    session.trust_env = False
    session.verify = str(pki.ca)
    session.headers["Authorization"] = f"Token {key}"
    ct = dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    stored = session.post(f"{base}/dicomweb/studies", timeout=20, data=b"".join(
        multipart.stream("b0undary", [(multipart.part_header("b0undary", "application/dicom"),
                                       [sample("CT_small.dcm").read_bytes()])])),
        headers={"Content-Type": multipart.content_type("b0undary", "application/dicom"),
                 "Accept": "application/dicom+json"})
    assert stored.status_code == 200, stored.text
    assert stored.json()["00081190"]["Value"][0].startswith(f"{base}/dicomweb/studies/")
    (study,) = session.get(f"{base}/dicomweb/studies", timeout=10).json()
    assert study["00081190"]["Value"] == [f"{base}/dicomweb/studies/{ct.StudyInstanceUID}"]
    inst = (f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
            f"{ct.SOPInstanceUID}")
    frame = session.get(f"{base}/dicomweb{inst}/frames/1", timeout=10)
    (part,) = multipart.parse(frame.content, multipart.boundary_of(frame.headers["Content-Type"]))
    assert part.location == f"{base}/dicomweb{inst}/frames/1"
